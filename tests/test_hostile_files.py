"""Damaged and hostile weight files given as --lora, --model, --upscaler or --interpolator: each is refused in
one line naming the option and the file, exit 2, before any video is made; and LoRA strengths read the way
diffusers and PEFT read them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from .conftest import EXAMPLES

PHOTO = EXAMPLES / "coffee.png"
FAST = ["--model", "tiny", "--size", "128x64", "--frames", "2", "--steps", "1", "--seed", "3", "--format", "frames"]
MODULE = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"  # 64 -> 64 features in the tiny UNet


def raw_safetensors(path: Path, header: bytes | dict, data: bytes = b"") -> Path:
    """A file in safetensors' framing (8-byte little-endian header length, header, data) with any header."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def lora_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def refused(svd, tmp_path, *args) -> str:
    """Run `svd animate` with `args`; the one error line, after checking exit 2, no traceback and no output."""
    out = tmp_path / "out"
    started = time.monotonic()
    r = svd("animate", PHOTO, *FAST, *args, "--out", out)
    errors = [line for line in r.lines if line.startswith("svd: error:")]
    assert r.code == 2 and len(errors) == 1 and r.lines[-1] == errors[0], r.err  # (the tiny model's first build
    assert "Traceback" not in r.err and not out.exists()  # may say so on a line before it)
    assert "Loading model" not in r.err and "Denoising" not in r.err  # before any video was begun
    assert time.monotonic() - started < 20  # refused from the header, before any model work
    return errors[0]


# --- headers no safetensors reader should parse (item 5, and the header bounds of item 6) --------------------

HEADERS = {
    "nested": (b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}", b"", "nests deeper than any safetensors header"),
    "shape": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8,
              "F32 (4,) needs 16 bytes but its offsets hold 8"),
    "negative": ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8,
                 "its data offsets are not two whole numbers"),
    "enormous": ({"w": {"dtype": "U8", "shape": [10**30], "data_offsets": [0, 10**30]}}, b"\0" * 8,
                 "its shape is not a list of whole numbers"),
    "big header": (b"{}" + b" " * 20, b"", None),  # its length field is rewritten below to claim 85 MB
}  # fmt: skip


@pytest.mark.parametrize("case", list(HEADERS))
@pytest.mark.parametrize("option", ["lora", "model"])
def test_a_hostile_safetensors_header_is_refused_in_one_line(svd, tmp_path, option, case):
    header, data, words = HEADERS[case]
    path = raw_safetensors(tmp_path / f"{case.replace(' ', '-')}.safetensors", header, data)
    if case == "big header":
        path.write_bytes((85 * 10**6).to_bytes(8, "little") + path.read_bytes()[8:])
        words = "its safetensors header claims 85,000,000 bytes, more than the 16 MB svd parses"
    args = ["--lora", path] if option == "lora" else ["--model", path, *FAST[2:]]
    line = refused(svd, tmp_path, *args)
    assert line.startswith(f"svd: error: --{option} {path}: ") and words in line, line


def test_a_header_of_too_many_tensors_is_refused_quickly(svd, tmp_path):
    """100,001 empty tensors (6 MB of header): past the 100,000 svd parses, said so in well under a second of
    parsing rather than minutes and gigabytes."""
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(100_001)}
    path = raw_safetensors(tmp_path / "many.safetensors", header)
    line = refused(svd, tmp_path, "--lora", path)
    assert "lists 100,001 tensors, more than the 100,000 svd accepts" in line, line


# --- LoRA tensors that do not make a LoRA (item 6) -----------------------------------------------------------

A, B = f"{MODULE}.lora_A.weight", f"{MODULE}.lora_B.weight"
LORAS = {
    "two alphas": ({A: torch.ones(4, 64), B: torch.ones(64, 4), f"{MODULE}.alpha": torch.ones(2)},
                   f"alpha {MODULE}.alpha holds 2 numbers, not one"),
    "1-D lora_A": ({A: torch.ones(4), B: torch.ones(64, 4)}, "not a linear or convolution LoRA's"),
    "two ranks": ({A: torch.ones(4, 64), B: torch.ones(64, 2)}, "lora_A has rank 4 and its lora_B 2"),
    "rank 0": ({A: torch.ones(0, 64), B: torch.ones(64, 0)}, "lora_A has rank 0"),
    "int64": ({A: torch.ones(4, 64, dtype=torch.int64), B: torch.ones(64, 4)}, "is I64, but a LoRA's weights"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LORAS))
def test_a_lora_whose_tensors_are_not_a_lora_is_refused_before_any_work(svd, tmp_path, case):
    tensors, words = LORAS[case]
    path = lora_file(tmp_path / f"{case.replace(' ', '-')}.safetensors", tensors)
    line = refused(svd, tmp_path, "--lora", path)
    assert line.startswith(f"svd: error: --lora {path}: ") and words in line, line


# --- LoRA alpha as diffusers writes it (item 4) -------------------------------------------------------------


def test_a_lora_alpha_kept_only_in_diffusers_metadata_sets_its_strength_as_peft_does(tmp_path):
    """diffusers (0.33 and later) stores `lora_alpha` in the file's `lora_adapter_metadata`, not as tensors.
    The reference is PEFT itself: the same adapter injected into the UNet and merged into its weights."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    from svd_cli.models.architectures import build_random_pipeline
    from svd_cli.models.lora import apply_loras

    unet = build_random_pipeline("tiny", seed=5).unet
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    config = LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False)
    torch.manual_seed(0)
    inject_adapter_in_model(config, unet)
    state = get_peft_model_state_dict(unet)
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        tmp_path, unet_lora_layers=state, unet_lora_adapter_metadata=config.to_dict(), safe_serialization=True
    )
    (path,) = tmp_path.glob("*.safetensors")
    with safe_open(str(path), "pt") as f:
        assert "lora_adapter_metadata" in f.metadata() and not any(k.endswith(".alpha") for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)

    for module in unet.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    expected = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}

    ours = build_random_pipeline("tiny", seed=5).unet
    ours.load_state_dict(base)
    apply_loras(ours, [(path, 1.0)], torch.float32)
    got = {k.replace(".base_layer", ""): v for k, v in ours.state_dict().items() if "lora_" not in k}
    changed = [k for k in expected if "to_q.weight" in k or "to_v.weight" in k]
    assert changed and all(torch.allclose(got[k], expected[k], atol=1e-6) for k in changed)
    assert not torch.allclose(got[changed[0]], base[changed[0]], atol=1e-3)  # the LoRA did change the weights


# --- post-stage model files (item 7) -------------------------------------------------------------------------


def test_an_upscaler_file_that_is_not_an_upscaler_is_refused_before_the_first_video(svd, tmp_path):
    path = lora_file(tmp_path / "not-an-upscaler.safetensors", {A: torch.ones(4, 64), B: torch.ones(64, 4)})
    line = refused(svd, tmp_path, "--upscale", "2", "--upscaler", path)
    assert line.startswith(f"svd: error: --upscaler {path}: not an upscaler spandrel recognises"), line


def test_an_interpolator_file_that_is_not_rife_names_the_option(svd, tmp_path):
    path = lora_file(tmp_path / "not-rife.safetensors", {A: torch.ones(4, 64), B: torch.ones(64, 4)})
    line = refused(svd, tmp_path, "--interpolate", "2", "--interpolator", path)
    assert line.startswith(f"svd: error: --interpolator {path}: not a RIFE 4.13 flow network"), line


# --- text files and stdin: read within bounds (issue 33) ----------------------------------------------------


def _endless_pipe(path: Path) -> Path:
    import os

    os.mkfifo(path)  # nothing ever writes to it: reading it would wait for ever
    return path


@pytest.mark.parametrize(
    "make, option, problem",
    [
        (lambda tmp: Path("/dev/zero"), "--recipe", "not a regular file"),
        (lambda tmp: _endless_pipe(tmp / "pipe.json"), "--recipe", "not a regular file"),
        (lambda tmp: _text(tmp / "big.json", "{" + " " * (1 << 20) + "}"), "--recipe", "larger than 1 MiB"),
        (lambda tmp: _text(tmp / "deep.json", "[" * 100_000 + "]" * 100_000), "--recipe", "nested more than 32"),
        (lambda tmp: _text(tmp / "shallow.json", "[" * 40 + "]" * 40), "--recipe", "nested more than 32"),
        (lambda tmp: Path("/dev/zero"), "--prompts", "not a regular file"),
        (lambda tmp: _text(tmp / "many.txt", "a fox\n" * (2 << 20)), "--prompts", "larger than 10 MiB"),
    ],
    ids=[
        "recipe-device",
        "recipe-pipe",
        "recipe-2MiB",
        "recipe-deep",
        "recipe-40-deep",
        "prompts-device",
        "prompts-12MiB",
    ],  # fmt: skip
)
def test_a_text_file_that_cannot_be_what_it_should_is_refused_without_reading_it_all(svd, tmp_path, make, option,
                                                                                     problem):  # fmt: skip
    path = make(tmp_path)
    started = time.monotonic()
    r = svd("animate", option, path, "--out", tmp_path / "out")
    assert (r.code, len(r.lines)) == (2, 1), r.err
    assert r.lines[0].startswith(f"svd: error: {option} {path}: {problem}"), r.err
    assert time.monotonic() - started < 2 and not (tmp_path / "out").exists()


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_endless_stdin_and_a_deep_config_file_are_refused(svd, tmp_path, monkeypatch):
    r = svd("animate", "-", stdin="a" * ((10 << 20) + 1))
    assert (r.code, r.lines) == (2, ["svd: error: stdin: more than 10 MiB of text; give one picture's path a line."])
    r = svd("animate", "--prompts", "-", stdin="a fox\n" * (2 << 20))
    assert (r.code, r.lines) == (2, ["svd: error: --prompts stdin: more than 10 MiB of text."])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "svd.toml").write_text("fps = " + "[" * 100_000 + "]" * 100_000 + "\n")
    r = svd("animate", PHOTO)
    assert r.code == 2 and r.lines == [f"svd: error: {tmp_path / 'svd.toml'}: nested too deeply to be a config file; "
                                       "fix or remove it."], r.err  # fmt: skip


def test_what_is_wrong_is_what_the_line_names(svd, tmp_path):
    """A scale that is not a number (the file is there), a picture renamed to .safetensors, a pipe or a device
    given as the image: each gets the line that names its own problem."""
    photo = tmp_path / "photo.png"
    photo.write_bytes((EXAMPLES / "coffee.png").read_bytes())
    line = refused(svd, tmp_path, "--lora", f"{photo}:abc")
    assert line == (f"svd: error: --lora {photo}:abc: the scale 'abc' of {photo} is not a number; write "
                    "PATH:SCALE, e.g. style.safetensors:0.8."), line  # fmt: skip
    renamed = tmp_path / "weights.safetensors"
    renamed.write_bytes(photo.read_bytes())
    line = refused(svd, tmp_path, "--unet", renamed)
    assert line.startswith(f"svd: error: --unet {renamed}: is not a safetensors file (its first 8 bytes are not a "
                           "header length"), line  # fmt: skip
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for source in (Path("/dev/zero"), fifo):
        r = svd("animate", source, *FAST, "--out", tmp_path / "out")
        assert r.code == 1 and f"✗ {source}: not a regular file (a pipe, a device or a socket)" in r.err, r.err


def test_a_model_index_naming_a_class_outside_diffusers_and_transformers_is_refused(svd, tiny_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["os", "system"]}))
    r = svd("animate", PHOTO, "--model", folder, *FAST[2:], "--out", tmp_path / "out")
    assert r.code == 1 and not (tmp_path / "out").exists(), r.err
    assert r.lines[-1] == (f"svd: error: {folder / 'model_index.json'} names its unet as os.system, not a diffusers "
                           "or transformers class (svd loads no other code); fix the file, or save the pipeline again "
                           "with diffusers' save_pretrained."), r.err  # fmt: skip
