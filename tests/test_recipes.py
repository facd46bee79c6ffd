"""Hostile recipes: `svd animate --recipe FILE` checks every recorded value exactly like a flag.

Each recipe below is wrong in one way; each run ends with one line naming the recipe file and the problem,
before any model is loaded, or (where the flags override the bad part) with a correct video.
"""

from __future__ import annotations

import copy
import json

import pytest

from .conftest import EXAMPLES, read_video

COFFEE = EXAMPLES / "coffee.png"
BASE = {
    "svd_version": "0.1.0",
    "input": {"path": str(COFFEE)},
    "output": {"path": "coffee.mp4", "format": "mp4"},
    "model": {"name": "tiny", "repo": None, "path": None},
    "settings": {"frames": 2, "fps": 7, "steps": 1, "seed": 1, "width": 128, "height": 64},
}


def _set(path: str, value):
    def change(recipe: dict) -> None:
        *parents, key = path.split(".")
        node = recipe
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[key]
        else:
            node[key] = value

    return change


HOSTILE = [
    ("not-json", "{ this is not json", "not a readable svd sidecar"),
    ("a-list", [1, 2, 3], "not a readable svd sidecar"),
    ("settings-text", _set("settings", "fast please"), "not a readable svd sidecar"),
    ("size-not-multiple", [_set("settings.width", 100), _set("settings.height", 100)],
     "size = 100x100: the width 100 must be a multiple of 64"),
    ("size-huge", [_set("settings.width", 8192), _set("settings.height", 8192)],
     "size = 8192x8192: the width 8192 must be a multiple of 64 between 64 and 4096"),
    ("frames-text", _set("settings.frames", "many"), "frames = 'many': expected a whole number."),
    ("frames-out-of-range", _set("settings.frames", 1000), "frames = 1000: must be between 2 and 128."),
    ("steps-fraction", _set("settings.steps", 2.5), "steps = 2.5: expected a whole number."),
    ("motion-bool", _set("settings.motion_bucket", True), "motion_bucket = True: expected a whole number."),
    ("seed-negative", _set("settings.seed", -5), "seed = -5: must be between 0 and"),
    ("noise-text", _set("settings.noise_aug", "lots"), "noise_aug = 'lots': expected a number."),
    ("memory-unknown", _set("runtime", {"memory": {"profile": "huge"}}),
     "memory = 'huge': choose one of auto, high, balanced, low, min."),
    ("format-unknown", _set("output.format", "avi"), "format = 'avi': choose one of mp4, gif, webm, frames."),
    ("model-not-text", _set("model", {"name": 42}), "model = 42: expected text."),
    ("no-input", _set("input", KeyError), "records no input image; give the image to animate as an argument."),
    ("input-gone", _set("input.path", "/nowhere/photo.png"), "its input /nowhere/photo.png is missing"),
    ("input-is-a-folder", _set("input.path", str(EXAMPLES)), f"its input {EXAMPLES} is missing"),
    ("other-hub-repo", _set("model", {"name": "someone/other-model", "repo": "someone/other-model"}),
     "uses the model someone/other-model, which is not on this machine; add --allow-download to download it"),
    ("registry-model-not-downloaded", _set("model", {"name": "svd-xt", "repo": "x"}),
     "uses the model svd-xt, which is not on this machine; add --allow-download to download it (about"),
    ("model-folder-gone", _set("model", {"name": "mine", "path": "/nowhere/my-model"}),
     "its model folder /nowhere/my-model is not on this machine"),
    ("lora-malformed", _set("model", {"name": "tiny", "lora": [{"file": "x.safetensors"}]}), "lora = "),
]  # fmt: skip


@pytest.mark.parametrize("change, needle", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_recipe_fails_in_one_line_naming_the_file(svd, tmp_path, monkeypatch, change, needle):
    monkeypatch.chdir(tmp_path)  # a recipe without input must not animate what is here
    (tmp_path / "bystander.png").write_bytes(COFFEE.read_bytes())
    recipe = tmp_path / "hostile.json"
    if isinstance(change, str):
        recipe.write_text(change)
    elif isinstance(change, list) and not callable(change[0]):
        recipe.write_text(json.dumps(change))
    else:
        data = copy.deepcopy(BASE)
        for c in change if isinstance(change, list) else [change]:
            c(data)
        recipe.write_text(json.dumps(data))
    r = svd("animate", "--recipe", recipe)
    assert r.code == 2, r.err
    assert len(r.lines) == 1 and r.lines[0].startswith(f"svd: error: --recipe {recipe}"), r.err
    assert needle in r.lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bystander.png", "hostile.json"]


def test_flags_override_the_bad_values_of_a_recipe_and_make_a_correct_video(svd, tiny_dir, tmp_path):
    data = copy.deepcopy(BASE)
    data["model"] = "tiny"  # a bare name where an object is expected: still a name
    data["settings"].update(frames=1000, width=100)  # wrong, but overridden below
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(data))
    out = tmp_path / "v.mp4"
    r = svd("animate", "--recipe", recipe, "--frames", "3", "--size", "128x64", "--out", out)
    assert r.code == 0, r.err
    assert read_video(out)[1].shape == (3, 64, 128, 3)


def test_allow_download_lets_a_recipe_fetch_its_model(svd, tmp_path, monkeypatch):
    """With the permission the download starts (and here fails offline, in one line naming the fix)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = copy.deepcopy(BASE)
    data["model"] = {"name": "svd-xt", "repo": "stabilityai/stable-video-diffusion-img2vid-xt"}
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(data))
    r = svd("animate", "--recipe", recipe, "--allow-download")
    assert r.code == 1 and "svd-xt is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it" in r.lines[-1]
