"""What the user asked for (`AnimateRequest`), checked, and completed with each model's defaults.

Validation lives here, not in the CLI, so scripts calling the library get the same one-sentence errors.
Each message names the option and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

DEFAULT_MODEL = "svd-xt"
DEFAULT_SIZE = (1024, 576)
FPS_RANGE = (3, 30)
SIZE_RANGE = (64, 4096)
MAX_SEED = 2**63 - 1


@dataclass
class AnimateRequest:
    """One `svd animate` invocation, as parsed: None means "the model's default"."""

    inputs: list[str] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    frames: int | None = None
    fps: int | None = None
    motion_bucket: int | None = None
    noise_aug: float = 0.02
    steps: int | None = None
    min_cfg: float = 1.0
    max_cfg: float = 3.0
    seed: int | None = None
    seeds: list[int] | None = None
    variations: int | None = None
    size: tuple[int, int] | None = None
    fit: str = "crop"
    background: str = "white"
    out: Path | None = None
    out_is_folder: bool = False  # --out ended with a path separator
    name: str | None = None
    format: str = "mp4"
    recursive: bool = False
    overwrite: bool = False
    device: str = "auto"
    dtype: str = "auto"
    decode_chunk: int | None = None
    memory: str = "auto"
    attention: str = "auto"
    vae_tiling: bool | None = None


def parse_size(value: str) -> tuple[int, int]:
    """'1024x576' -> (1024, 576), both multiples of 64."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value or "")
    if not m:
        raise UsageError(f"--size {value!r}: write it as WIDTHxHEIGHT, e.g. 1024x576.")
    width, height = int(m.group(1)), int(m.group(2))
    lo, hi = SIZE_RANGE
    for what, n in (("width", width), ("height", height)):
        if n % 64 or not lo <= n <= hi:
            raise UsageError(
                f"--size {value}: the {what} {n} must be a multiple of 64 between {lo} and {hi} "
                "(SVD works in 8x8 latent pixels, 64-pixel steps keep every layer aligned), e.g. 1024x576."
            )
    return width, height


def parse_seeds(value: str) -> list[int]:
    try:
        seeds = [int(part) for part in value.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise UsageError(f"--seeds {value!r}: write whole numbers separated by commas, e.g. 1,2,3.") from None
    if not seeds:
        raise UsageError("--seeds: give at least one seed, e.g. --seeds 1,2,3.")
    for s in seeds:
        _check_seed(s, "--seeds")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {value}: a seed appears twice; each seed makes one video.")
    return seeds


def _check_seed(seed: int, option: str) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{option} {seed}: a seed must be between 0 and {MAX_SEED}.")


def validate(req: AnimateRequest) -> None:
    """Raise UsageError (exit 2) for the first option outside what svd can do."""
    from .images import FITS, parse_color
    from .loading import DEVICES, DTYPES
    from .memory import MEMORY_CHOICES
    from .memory.attention import ATTENTION_MODES
    from .video import FORMATS

    def in_range(option: str, value, lo, hi, what: str = "") -> None:
        if value is not None and not lo <= value <= hi:
            raise UsageError(f"{option} {value}: must be between {lo} and {hi}{what}.")

    in_range("--fps", req.fps, *FPS_RANGE, " (it is both the model's fps conditioning and the video's rate)")
    in_range("--motion-bucket", req.motion_bucket, 0, 255, " (higher means more motion; the default is 127)")
    in_range("--frames", req.frames, 2, 128)
    in_range("--steps", req.steps, 1, 200)
    in_range("--noise-aug", req.noise_aug, 0.0, 1.0, " (the default is 0.02)")
    in_range("--min-cfg", req.min_cfg, 0.0, 30.0)
    in_range("--max-cfg", req.max_cfg, 0.0, 30.0)
    in_range("--decode-chunk", req.decode_chunk, 1, 128)
    in_range("--variations", req.variations, 1, 1000)
    if req.min_cfg > req.max_cfg:
        raise UsageError(
            f"--min-cfg {req.min_cfg} is above --max-cfg {req.max_cfg}: guidance rises from the first frame "
            "(min) to the last (max)."
        )
    if req.seed is not None:
        _check_seed(req.seed, "--seed")
    if sum(x is not None for x in (req.seed, req.seeds, req.variations)) > 1:
        raise UsageError("--seed, --seeds and --variations choose seeds in different ways: use only one of them.")
    for option, value, allowed in (
        ("--format", req.format, FORMATS),
        ("--fit", req.fit, FITS),
        ("--device", req.device, DEVICES),
        ("--dtype", req.dtype, DTYPES),
        ("--memory", req.memory, MEMORY_CHOICES),
        ("--attention", req.attention, ATTENTION_MODES),
    ):
        if value not in allowed:
            raise UsageError(f"{option} {value}: choose one of {', '.join(allowed)}.")
    parse_color(req.background)
    if not req.inputs:
        raise UsageError("Give at least one input image, folder or glob (or - to read paths from stdin).")


@dataclass(frozen=True)
class ModelDefaults:
    """Defaults a model brings: from weights.toml for named models, from its UNet config otherwise."""

    frames: int
    steps: int
    fps: int
    motion_bucket: int
    fixed_conditioning: bool = False
    size: tuple[int, int] = DEFAULT_SIZE


def model_defaults(source, unet_config: dict | None = None) -> ModelDefaults:
    entry = source.entry
    if entry is not None:
        return ModelDefaults(
            entry.frames, entry.steps, entry.fps, entry.motion_bucket, entry.fixed_conditioning, entry.size
        )
    frames = int((unet_config or {}).get("num_frames", 14))
    return ModelDefaults(frames=frames, steps=25, fps=7, motion_bucket=127)


def read_unet_config(folder: Path) -> dict:
    import json

    try:
        return json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
