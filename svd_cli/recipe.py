"""Recipes: the sidecar JSON next to every video, which says exactly how it was made.

A recipe repeats a video (`svd animate --recipe photo.json`) and decides resuming: an output whose recipe
matches what this run would make is done; one made otherwise is reported, never silently kept.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from ._version import __version__
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
    seed_fixed: bool,
    fit: str,
    background: str,
    model: dict,
    runtime: dict | None = None,
    seconds: float | None = None,
) -> dict:
    """Everything needed to make the same video again."""
    data = {
        "svd_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {"path": str(input_path.resolve()), "sha256": input_sha256},
        "output": {
            "path": str(output),
            "format": fmt,
            "frames": settings.frames,
            "fps": settings.fps,
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
    return {
        "input_sha256": recipe.get("input", {}).get("sha256"),
        "model": recipe.get("model", {}).get("name"),
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
        why = f"{output} exists without a readable recipe ({sidecar.name}); use --overwrite to replace it"
        return "foreign", why, None
    if expected is None:
        return "done", "already done", recipe
    old, new = comparable(recipe, seed_fixed), comparable(expected, seed_fixed)
    if old == new:
        return "done", "already done with the same settings", recipe
    why = f"{output} exists but was made with other settings ({describe_changes(old, new)}); use --overwrite to redo it"
    return "differs", why, None


def request_values(recipe: dict) -> dict:
    """AnimateRequest fields that repeat the recipe's video (None where the recipe has no opinion)."""
    settings = recipe["settings"]
    model = recipe.get("model", {})
    values = {
        # A downloaded or built-in model by its name; a local folder by its path.
        "model": model.get("name") if model.get("repo") or not model.get("path") else model.get("path"),
        "frames": settings.get("frames"),
        "fps": settings.get("fps"),
        "motion_bucket": settings.get("motion_bucket"),
        "noise_aug": settings.get("noise_aug"),
        "steps": settings.get("steps"),
        "min_cfg": settings.get("min_cfg"),
        "max_cfg": settings.get("max_cfg"),
        "seed": settings.get("seed"),
        "size": (settings["width"], settings["height"]) if "width" in settings else None,
        "fit": settings.get("fit"),
        "background": settings.get("background"),
        "format": recipe.get("output", {}).get("format"),
    }
    runtime = recipe.get("runtime", {})
    if runtime:
        memory = runtime.get("memory", {})
        values.update(
            dtype=runtime.get("dtype"),
            device=runtime.get("device", "auto").split(":")[0],
            memory=memory.get("profile") if memory.get("profile") != "custom" else None,
            decode_chunk=memory.get("decode_chunk"),
            vae_tiling=memory.get("vae_tiling"),
        )
    return values
