"""Model kinds: what a registry entry or a model folder can be, and the defaults each kind brings.

Plain data, importable without torch: planning a batch (names, resume) needs the defaults long before any
model is loaded. The adapter that builds and runs each kind lives in `adapters.py`.
"""

from __future__ import annotations

from pathlib import Path

# Per kind: the default of every setting the model decides, its sampler included (see options.GENERATION).
KIND_DEFAULTS: dict[str, dict] = {
    "svd": {
        "defaults": {
            "frames": 14,
            "steps": 25,
            "fps": 7,
            "motion_bucket": 127,
            "noise_aug": 0.02,
            "min_cfg": 1.0,
            "max_cfg": 3.0,
            "size": (1024, 576),
            "sampler": "euler",
        },
    },
}


def kind_defaults(kind: str) -> dict:
    """A fresh copy of a kind's defaults (callers may change it)."""
    return dict(KIND_DEFAULTS[kind]["defaults"])


def folder_defaults(folder: Path, kind: str = "svd") -> dict:
    """Defaults for a model folder svd has no registry entry for: the kind's, with the UNet's own frame count."""
    import json

    defaults = kind_defaults(kind)
    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        defaults["frames"] = int(config.get("num_frames", defaults["frames"]))
    except (OSError, ValueError, TypeError):
        pass
    return defaults
