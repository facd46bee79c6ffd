"""The live preview: after every denoising step, the video the step predicts, decoded small and written beside
the output (io/preview.py), so a viewer shows where a long video is going before it is done.

The step's prediction of the clean latents is decoded by a tiny TAESD-family decoder (models/decoder.py), from
latents pooled to half size when they are wide (`preview_latent_size`). The time it takes is added up, so the
run can say what the preview cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...errors import first_line
from ...io.preview import write_preview
from ...models.decoder import decode_each, preview_latent_size
from ...progress import Progress
from .base import Step, StepHook


class LivePreview(StepHook):
    """Writes `path` after every step with `decoder` (a tiny decoder's PostModel on the device) at `fps`."""

    def __init__(self, path: Path, decoder, fps: int, progress: Progress):
        self.path, self.decoder, self.fps, self.progress = path, decoder, fps, progress
        self.seconds = 0.0  # spent decoding and writing, over every step of every video
        self.writes = 0
        self.failed = False  # after a write fails (a full disk...), the run goes on without a preview

    def after(self, step: Step) -> None:
        if self.failed:
            return
        started = time.perf_counter()
        latents = step.denoised if step.denoised is not None else step.latents
        latents = latents.flatten(0, 1).float()  # (frames, channels, h, w)
        if preview_latent_size(*latents.shape[-2:]) != latents.shape[-2:]:
            latents = torch.nn.functional.avg_pool2d(latents, 2)
        pixels = torch.cat(list(decode_each(self.decoder, latents)))
        frames = ((pixels * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
        try:
            write_preview(frames, self.path, self.fps)
        except OSError as exc:
            self.failed = True
            self.progress.note(f"Preview: could not write {self.path} ({first_line(exc)}); going on without it")
            return
        self.seconds += time.perf_counter() - started
        self.writes += 1

    def cost(self) -> str:
        """What the preview has cost so far, for the run's notes."""
        each = self.seconds / self.writes if self.writes else 0.0
        return f"Preview: {self.writes} updates, {each:.2f} s each ({self.seconds:.1f} s in all)"
