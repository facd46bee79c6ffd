"""The one orchestration every caller shares: request -> model -> adapter -> memory plan -> stages -> clip.

The CLI's batches, `--recipe` replays and the library API (`svd_cli.load(...).animate_image(...)`) all run
through a `Session`: it resolves the model once (downloading if needed), knows its defaults, loads it on the
first video (sized for that video, so `auto` plans for the real job) and runs the stages for each video.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ref
from .options import GenerationSettings, Request, with_defaults
from .progress import NullProgress, Progress
from .stages import Clip

if TYPE_CHECKING:
    from PIL import Image

    from .stages.first_frame import FirstFrame


class _Model:
    """What a session resolved and loaded, shared by the sessions derived from it."""

    source = None
    defaults: dict[str, Any] = {}
    animator = None


class Session:
    """One model for many videos."""

    def __init__(self, request: Request, progress: Progress | None = None, model: _Model | None = None):
        self.request = request
        self.progress = progress or NullProgress()
        self._model = model or _Model()

    def derive(self, request: Request) -> Session:
        """A session for other settings on the same resolved and loaded model (the API's per-call options)."""
        return Session(request, self.progress, self._model)

    source = property(lambda self: self._model.source)
    defaults = property(lambda self: self._model.defaults)
    animator = property(lambda self: self._model.animator)

    # --- 1. the model: resolved now, loaded on the first video ------------------------------------------

    def resolve(self) -> None:
        from .models.sources import resolve_model

        self._model.source = resolve_model(self.request.model, progress=self.progress)
        self._model.defaults = self._model.source.defaults()
        entry = self.source.entry
        if entry is not None and entry.fixed_conditioning:
            d, req = self.defaults, self.request
            asked = (
                req.given("fps") or d["fps"],
                d["motion_bucket"] if req.motion_bucket is None else req.motion_bucket,
            )
            if asked != (d["fps"], d["motion_bucket"]):
                self.progress.note(
                    f"{self.source.name} was fine-tuned at fps {d['fps']} and motion bucket {d['motion_bucket']}; "
                    "other values may give worse motion"
                )

    def load(self, first: GenerationSettings) -> None:
        """Load the model and choose its memory plan for a video like `first`."""
        from .memory import choose_plan
        from .models.loading import load_model, resolve_device, resolve_dtype
        from .stages.animate import Animator

        req = self.request
        device = resolve_device(req.device)
        dtype = resolve_dtype(req.dtype, device)
        if device.type == "cpu" and req.dtype == "fp16":
            self.progress.note(f"fp16 on the CPU is much slower than fp32 ({ref('dtype')} auto); it is meant for GPUs")
        self.progress.start("load")
        model = load_model(self.source, device, dtype)
        self.progress.end()
        overrides = {
            "decode_chunk": req.decode_chunk,
            "vae_tiling": req.vae_tiling,
            "attention": req.attention if req.attention != "auto" else None,
        }
        plan = choose_plan(model, req.memory, overrides, (first.frames, first.width, first.height))
        savers = plan.savers()
        self.progress.note(
            f"Memory profile {plan.profile}: {plan.reason} [{', '.join(savers) if savers else 'no savers'}]"
        )
        self._model.animator = Animator(model, plan)

    # --- 2. per video: settings, first frame, animate ---------------------------------------------------

    def settings_for(self, seed: int, size: tuple[int, int]) -> GenerationSettings:
        values = with_defaults(self.request, self.defaults)
        return GenerationSettings(**values, seed=seed, width=size[0], height=size[1])

    def first_frame_from_file(self, path) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        frame = first_frame.from_file(path, req.size, self.defaults["size"], req.fit, req.background)
        for note in frame.notes:
            self.progress.note(note)
        return frame

    def first_frame_from_image(self, image: Image.Image) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        size = first_frame.target_size(req.size, self.defaults["size"], image.size)
        return first_frame.from_image(image, size, req.fit, req.background, {"source": "image"})

    def animate(self, frame: FirstFrame, seed: int) -> Clip:
        """The animate stage (and, as they come, extend and post stages) on one first frame."""
        settings = self.settings_for(seed, frame.picture.size)
        if self.animator is None:
            self.load(settings)
        from .stages.animate import degenerate_frames

        frames = self.animator.animate(frame.picture, settings, self.progress)
        record = {"stage": "animate", "model": self.source.name, "sampler": self.source.sampler,
                  "settings": settings.as_dict(), "fps_conditioning": settings.fps - 1}  # fmt: skip
        if self.animator.upcast:
            record["upcast"] = dict(self.animator.upcast)  # the NaN guard widened these components
        flat = degenerate_frames(frames)
        warnings = []
        if flat:
            which = "every frame is" if len(flat) == len(frames) else f"frames {', '.join(map(str, flat[:10]))} are"
            warnings.append(f"{which} a single flat colour: the model may have failed (check the video)")
        for warning in warnings:
            self.progress.note(f"Warning: {warning}")
        return Clip(frames=frames, fps=settings.fps, stages=[frame.record, record], warnings=warnings)

    def runtime(self) -> dict:
        """Where and how this run computes: recorded so a recipe can be repeated exactly."""
        import diffusers
        import torch

        from .models.loading import dtype_name

        model, plan = self.animator.model, self.animator.plan
        return {
            "device": str(model.device),
            "dtype": dtype_name(model.dtype),
            "memory": plan.describe() | {"attention_kernel": self.animator.placement.attention},
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }
