"""Kept latents (keep_latents, draft): a video's final denoised latents beside it, for `svd finish`.

`NAME.latents.safetensors` holds one tensor, `latents` (batch, frames, channels, height/8, width/8), in the
denoiser's dtype: exactly what the decoder was given. Its metadata carries svd's mark and the key of the work
that made it (`work_key`: the input, the model and the settings that decide the latents, read from the recipe),
so a finish decodes it only for the video it was kept with. Written atomically; svd replaces or removes only a
file with its mark.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SvdError, first_line, ref
from ..options import GenerationSettings
from .recipe import comparable
from .safety import remove
from .video import atomic_output

if TYPE_CHECKING:
    import torch

LATENTS_SUFFIX = ".latents.safetensors"
LATENTS_MARK = "svd kept latents"
# Besides the generation settings, what decides a video's latents: how the photo is fitted into the first frame,
# and how the UNet's weights are stored.
ALSO_DECIDING = ("fit", "background", "weights")


class LatentsError(SvdError):
    """Kept latents that are missing, unreadable, or kept for other work."""


@dataclass(frozen=True)
class KeptLatents:
    """A draft's kept latents (`path`) and the key of the work its recipe describes, which they must carry."""

    path: Path
    key: str

    def read(self, video: Path) -> torch.Tensor:
        return read_latents(self.path, self.key, video)


def latents_path(output: Path, fmt: str) -> Path:
    """The kept latents beside an output: fox.mp4 -> fox.latents.safetensors (a frames folder fox/ likewise)."""
    base = output if fmt == "frames" else output.with_suffix("")
    return base.with_name(base.name + LATENTS_SUFFIX)


def work_key(recipe: dict) -> str:
    """What decides the latents of a recipe's video, hashed: its input (photo or prompt, and mask), model, UNet and
    LoRAs, the generation settings, the first frame's fitting and the weights' storage, with its seed. Not the decoder,
    nor the post stages, nor the format: a finish changes those."""
    work = comparable(recipe, seed_fixed=True)
    decides = (*GenerationSettings.FIELDS, *ALSO_DECIDING, *(("mask_feather",) if "mask_sha256" in work else ()))
    work["settings"] = {name: value for name, value in work["settings"].items() if name in decides}
    work.pop("format")
    return hashlib.sha256(json.dumps(work, sort_keys=True, default=str).encode()).hexdigest()


def write_latents(latents: torch.Tensor, path: Path, key: str) -> None:
    """The latents at `path` with svd's mark and `key`, atomically."""
    from safetensors.torch import save_file

    with atomic_output(path) as tmp:
        save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp),
                  metadata={"svd": LATENTS_MARK, "work": key})  # fmt: skip


def check_latents(path: Path, key: str, video: Path) -> None:
    """Raise LatentsError unless `path` holds svd's kept latents for the work `key` (reading only its header)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise LatentsError(
            f"{video}: no kept latents beside it ({path.name}): only videos made with {ref('draft')} or "
            f"{ref('keep_latents')} can be finished.",
            path=path,
        )
    try:
        with safe_open(str(path), "pt") as handle:
            metadata, names = handle.metadata() or {}, list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise LatentsError(
            f"{path}: unreadable kept latents ({first_line(exc)}); make the draft of {video.name} again.", path=path
        ) from None
    if metadata.get("svd") != LATENTS_MARK or names != ["latents"]:
        raise LatentsError(f"{path}: not latents svd kept; svd finishes only its own drafts.", path=path)
    if metadata.get("work") != key:
        raise LatentsError(
            f"{path}: kept for other work than the recipe of {video} says (another model, photo or settings); make "
            "the draft again.",
            path=path,
        )


def read_latents(path: Path, key: str, video: Path) -> torch.Tensor:
    """The kept latents at `path`, checked (`check_latents`) to be svd's for the work `key`."""
    from safetensors.torch import load_file

    check_latents(path, key, video)
    return load_file(str(path))["latents"]


def is_own_latents(path: Path) -> bool:
    """Whether `path` is a file of kept latents svd wrote (its metadata has svd's mark)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("svd") == LATENTS_MARK
    except (SafetensorError, OSError):
        return False


def latents_blocked(path: Path) -> bool:
    """Whether a file svd did not make holds the kept latents' name (svd then never writes there)."""
    return path.exists() and not is_own_latents(path)


def discard_latents(path: Path) -> None:
    """Remove kept latents svd wrote (once finished); anything else at `path` is left alone."""
    if is_own_latents(path):
        remove(path)
