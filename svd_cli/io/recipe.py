"""Recipes: the sidecar JSON next to every video, which says exactly how it was made.

A recipe repeats a video (`svd animate --recipe photo.json`) and decides resuming: an output whose recipe
matches what this run would make is done; one made otherwise is reported, never silently kept.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from .._version import __version__
from ..errors import UsageError, ref
from .video import sidecar_path

# Recorded for people, derived from other fields: they never decide whether two videos are the same.
DERIVED_SETTINGS = ("fps_conditioning", "seed_fixed")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_recipe(
    *,
    input_path: Path,
    input_sha256: str,
    output: Path,
    fmt: str,
    settings,
    fps: int,
    seed_fixed: bool,
    fit: str,
    background: str,
    model: dict,
    stages: list[dict] | None = None,
    runtime: dict | None = None,
    seconds: float | None = None,
) -> dict:
    """Everything needed to make the same video again.

    `settings` are the animate stage's; `fps` is the written video's frame rate (the conditioning fps is
    settings.fps - 1); `stages` is the ordered chain that made the clip, each with its own settings.
    """
    data = {
        "svd_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_path.resolve()), "sha256": input_sha256},
        "output": {
            "path": str(output),
            "format": fmt,
            "frames": settings.frames,
            "fps": fps,
            "width": settings.width,
            "height": settings.height,
        },
        "model": model,
        "settings": {
            **settings.as_dict(),
            "fps_conditioning": settings.fps - 1,
            "seed_fixed": seed_fixed,
            "fit": fit,
            "background": background,
        },
    }
    if stages is not None:
        data["stages"] = stages
    if runtime is not None:
        data["runtime"] = runtime
    if seconds is not None:
        data["seconds"] = round(seconds, 2)
    return data


def comparable(recipe: dict, seed_fixed: bool) -> dict:
    """The parts of a recipe that decide the video (the seed only when the user fixed it)."""
    settings = {k: v for k, v in recipe.get("settings", {}).items() if k not in DERIVED_SETTINGS}
    if not seed_fixed:
        settings.pop("seed", None)
    model = recipe.get("model", {})
    return {
        "input_sha256": recipe.get("input", {}).get("sha256"),
        "model": model.get("name"),
        "unet": (model.get("unet") or {}).get("sha256"),
        "lora": [(item.get("sha256"), item.get("scale")) for item in model.get("lora") or []],
        "format": recipe.get("output", {}).get("format"),
        "settings": settings,
    }


def describe_changes(old: dict, new: dict) -> str:
    """'fps 7 -> 12, input image changed' for two `comparable` dicts."""
    parts = []
    for key in sorted(set(old) | set(new)):
        if key == "settings":
            a, b = old.get(key, {}), new.get(key, {})
            parts += [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif old.get(key) != new.get(key):
            parts.append("input image changed" if key == "input_sha256" else f"{key} {old.get(key)} -> {new.get(key)}")
    return ", ".join(parts) or "unknown difference"


def resume_state(output: Path, fmt: str, expected: dict | None, seed_fixed: bool) -> tuple[str, str, dict | None]:
    """('todo' | 'done' | 'differs' | 'foreign', why, the earlier recipe) for an output that may already exist."""
    if not output.exists():
        return "todo", "", None
    sidecar = sidecar_path(output, fmt)
    try:
        recipe = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        why = f"{output} exists without a readable recipe ({sidecar.name}); use {ref('overwrite')} to replace it"
        return "foreign", why, None
    if expected is None:
        return "done", "already done", recipe
    old, new = comparable(recipe, seed_fixed), comparable(expected, seed_fixed)
    if old == new:
        return "done", "already done with the same settings", recipe
    changes = describe_changes(old, new)
    why = f"{output} exists but was made with other settings ({changes}); use {ref('overwrite')} to redo it"
    return "differs", why, None


def read_recipe(path: Path) -> dict:
    """A sidecar recipe, or a UsageError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise UsageError(
            f"{ref('recipe')} {path}: not a readable svd sidecar (.json written next to a video).",
            option="recipe",
            path=path,
        )
    return data
