"""Recipes: the sidecar JSON next to every video, which says exactly how it was made.

A recipe repeats a video (replayed from the sidecar) and decides resuming: an output whose recipe
matches what this run would make is done; one made otherwise is reported, never silently kept.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from .._version import __version__
from ..errors import UsageError, ref
from ..options import OPTIONS
from .bounded import BoundedReadError, load_json, read_text
from .safety import occupant, refusal

# Recorded for people, derived from other fields: they never decide whether two videos are the same.
DERIVED_SETTINGS = ("fps_conditioning", "seed_fixed")


def build_recipe(
    *,
    input_path: Path | None,
    input_sha256: str | None,
    output: Path,
    fmt: str,
    settings,
    fps: int,
    seed_fixed: bool,
    shape: tuple[int, int, int] | None = None,
    recorded: dict,
    model: dict,
    image: dict | None = None,
    still: Path | None = None,
    stages: list[dict] | None = None,
    runtime: dict | None = None,
    seconds: float | None = None,
    mask: dict | None = None,
    end: dict | None = None,
    keyframes: list[dict] | None = None,
) -> dict:
    """Everything needed to make the same video again.

    `settings` are the animate stage's; `recorded` the other options the schema records under "settings"
    (options.recorded_settings); `fps` and `shape` (frames, width, height) are the written video's, after the
    post stages (the conditioning fps is settings.fps - 1); `stages` is the ordered chain that made the clip,
    each with its own settings. `image` is the text-to-image model's part (prompt, style, model, steps...) when it
    made the first frame, and `still` where that first frame is saved. A video from a prompt has no input image;
    a cinemagraph's `mask`, the `end` picture and the `keyframes` after the input (path and SHA-256 each) are
    recorded with its input.
    """
    data = {
        "svd_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "path": str(input_path.resolve()) if input_path else None,
            "sha256": input_sha256,
            **({"mask": mask} if mask is not None else {}),
            **({"end": end} if end is not None else {}),
            **({"keyframes": keyframes} if keyframes else {}),
        },
        "output": {
            "path": str(output),
            "format": fmt,
            "frames": shape[0] if shape else settings.frames,
            "fps": fps,
            "width": shape[1] if shape else settings.width,
            "height": shape[2] if shape else settings.height,
            **({"still": str(still)} if still is not None else {}),
        },
        "model": model,
        "settings": {
            **settings.as_dict(),
            "fps_conditioning": settings.fps - 1,
            "seed_fixed": seed_fixed,
            **recorded,
        },
    }
    if image is not None:
        data["image"] = image
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
    for name, value in unrecorded_defaults(settings).items():
        settings[name] = value  # a recipe from before a setting existed was made at its default
    if not seed_fixed:
        settings.pop("seed", None)
    image = dict(recipe.get("image") or {})
    if image:
        image["model"] = (image.get("model") or {}).get("name")
    model = recipe.get("model", {})
    given = recipe.get("input", {})
    mask, end = given.get("mask"), given.get("end")
    return {
        "input_sha256": given.get("sha256"),
        **({"mask_sha256": mask.get("sha256")} if isinstance(mask, dict) else {}),
        **({"end_sha256": end.get("sha256")} if isinstance(end, dict) else {}),
        **(
            {"keyframes_sha256": [k.get("sha256") for k in given["keyframes"] if isinstance(k, dict)]}
            if isinstance(given.get("keyframes"), list)
            else {}
        ),  # fmt: skip
        "model": model.get("name"),
        "unet": (model.get("unet") or {}).get("sha256"),
        "lora": [(item.get("sha256"), item.get("scale")) for item in model.get("lora") or []],
        "format": recipe.get("output", {}).get("format"),
        "settings": settings,
        "image": image,
    }


def unrecorded_defaults(settings: dict) -> dict:
    """The defaults of the settings an older recipe does not record (they did not exist when it was made)."""

    return {
        o.name: o.default
        for o in OPTIONS
        if o.recipe == f"settings.{o.name}" and not o.from_model and o.default is not None and o.name not in settings
    }


def describe_changes(old: dict, new: dict) -> str:
    """'fps 7 -> 12, input image changed' for two `comparable` dicts."""
    parts = []
    for key in sorted(set(old) | set(new)):
        if key in ("settings", "image"):
            a, b = old.get(key, {}), new.get(key, {})
            parts += [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif old.get(key) != new.get(key):
            changed = {"input_sha256": "input image changed", "mask_sha256": "mask changed",
                       "end_sha256": "end picture changed", "keyframes_sha256": "keyframes changed"}  # fmt: skip
            parts.append(changed.get(key) or f"{key} {old.get(key)} -> {new.get(key)}")
    return ", ".join(parts) or "unknown difference"


def resume_state(
    output: Path, fmt: str, expected: Callable[[], dict | None], seed_fixed: bool, still: Path | None = None
) -> tuple[str, str, dict | None]:
    """('todo' | 'done' | 'differs' | 'foreign', why, the earlier recipe) for an output that may already exist.

    'done' and 'differs' are svd's own outputs (redone only when asked to overwrite); 'foreign' is anything
    svd did not make, which it never replaces (io/safety.py). `expected()` gives the recipe this run would write
    (None: any recipe will do); it is asked only when there is an earlier video to compare with, since it hashes
    the input. `still` is where this run would save its first frame, if it saves one.
    """
    occ = occupant(output, fmt)
    if occ.state == "free":
        if still is not None and still.exists():
            why = f"{still} exists and svd did not make it (no video beside it); use {ref('overwrite')} to replace it"
            return "foreign", why, None
        return "todo", "", None
    if occ.state == "foreign":
        return "foreign", refusal(occ), None
    recipe = occ.recipe
    wanted = expected()
    if wanted is None:
        return "done", "already done", recipe
    old, new = comparable(recipe, seed_fixed), comparable(wanted, seed_fixed)
    if old == new:
        return "done", "already done with the same settings", recipe
    changes = describe_changes(old, new)
    why = f"{output} exists but was made with other settings ({changes}); use {ref('overwrite')} to redo it"
    return "differs", why, None


def read_recipe(path: Path) -> dict:
    """A sidecar recipe, or a UsageError naming the file."""
    try:
        data = load_json(read_text(Path(path)))
    except BoundedReadError as exc:
        raise UsageError(f"{ref('recipe')} {path}: {exc}.", option="recipe", path=path) from None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise UsageError(
            f"{ref('recipe')} {path}: not a readable svd sidecar (.json written next to a video).",
            option="recipe",
            path=path,
        )
    if data.get("command") == "inpaint":
        raise UsageError(
            f"{ref('recipe')} {path}: the recipe of an inpainted video; run svd inpaint again on its video and mask "
            "(both recorded in it).",
            option="recipe",
            path=path,
        )
    return data
