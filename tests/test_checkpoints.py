"""The checkpoints users already have, and 4-step video: Stability's single files, AnimateLCM's sampler,
fine-tuned UNets and LoRAs, all on the tiny architecture with real diffusers/transformers/PEFT classes.

Weight files are written here: the tiny model in Stability's layout by tests/sgm_layout.py (an inverse of the
loader's mapping derived from the module structure), a LoRA made with PEFT, a UNet with other weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import EXAMPLES, read_video
from .sgm_layout import unet_tensors, write_sgm_file

PHOTO = EXAMPLES / "coffee.png"
FAST = ["--size", "128x64", "--frames", "2", "--steps", "1", "--seed", "3", "--format", "frames"]


@pytest.fixture(scope="module")
def files(tiny_dir, tmp_path_factory):
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder, StableVideoDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    from svd_cli.models.architectures import TINY_VAE, build_random_pipeline

    base = tmp_path_factory.mktemp("weights")
    pipe = StableVideoDiffusionPipeline.from_pretrained(tiny_dir, torch_dtype=torch.float32)
    f = SimpleNamespace(base=base)
    # SVD's VAE has two resnets per level (sgm's num_res_blocks=2); with one, diffusers' temporal decoder has a
    # single mid resnet and never applies its mid attention, so a mistake in mapping those could not show.
    vae_config = {**TINY_VAE, "layers_per_block": 2}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        pipe.vae = AutoencoderKLTemporalDecoder(**vae_config).eval()
        per_frame = copy.copy(pipe)
        # The *_image_decoder files' first stage: a per-frame AutoencoderKL with a (random, so not the
        # identity) post_quant_conv that its decode runs before the decoder.
        per_frame.vae = AutoencoderKL(**vae_config, up_block_types=("UpDecoderBlock2D",) * 4).eval()
    f.folder = base / "tiny-folder"
    pipe.save_pretrained(f.folder)
    f.single = write_sgm_file(pipe, base / "tiny-svd.safetensors")
    f.image_vae = per_frame.vae
    f.image_decoder_folder = base / "tiny-image-decoder-folder"
    per_frame.save_pretrained(f.image_decoder_folder)
    f.image_decoder = write_sgm_file(per_frame, base / "tiny-svd_image_decoder.safetensors")

    unet = copy.deepcopy(pipe.unet)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False), unet)  # fmt: skip
    f.lora = base / "motion-lora.safetensors"
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}, str(f.lora))
    f.bad_lora = base / "lora-for-another-model.safetensors"
    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{module}.lora_A.weight": torch.randn(4, 128), f"{module}.lora_B.weight": torch.randn(64, 4)},
              str(f.bad_lora))  # fmt: skip

    f.other_unet = build_random_pipeline("tiny", seed=99).unet
    f.unet = base / "finetuned-unet.safetensors"  # in Stability's layout, to exercise the conversion too
    save_file({k: v.contiguous() for k, v in unet_tensors(f.other_unet).items()}, str(f.unet))

    f.sd15 = base / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(4, 8)},
              str(f.sd15))  # fmt: skip
    f.truncated = base / "svd_xt-truncated.safetensors"
    f.truncated.write_bytes(f.single.read_bytes()[: f.single.stat().st_size // 2])
    return f


def frames_in(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


_BASE: dict[str, np.ndarray] = {}


def base_frames(svd, tmp_path) -> np.ndarray:
    """The tiny model's frames in diffusers layout for FAST (computed once per module)."""
    if "tiny" not in _BASE:
        r = svd("animate", PHOTO, "--model", "tiny", *FAST, "--out", tmp_path / "base")
        assert r.code == 0, r.err
        _BASE["tiny"] = frames_in(tmp_path / "base")
    return _BASE["tiny"]


# --- single files ---------------------------------------------------------------------------------------------


def test_single_file_gives_the_diffusers_layouts_frames_and_imports(svd, files, tmp_path):
    r = svd("animate", PHOTO, "--model", files.folder, *FAST, "--out", tmp_path / "folder")
    assert r.code == 0, r.err
    base = frames_in(tmp_path / "folder")
    r = svd("animate", PHOTO, "--model", files.single, *FAST, "--out", tmp_path / "file")
    assert r.code == 0, r.err
    assert np.array_equal(frames_in(tmp_path / "file"), base)

    recipe = json.loads((tmp_path / "file.frames.json").read_text())
    single = recipe["model"]["single_file"]
    assert single["path"] == str(files.single.resolve()) and single["size"] == files.single.stat().st_size
    assert single["sha256"] == hashlib.sha256(files.single.read_bytes()).hexdigest()
    r = svd("animate", "--recipe", tmp_path / "file.frames.json", "--out", tmp_path / "again", "--format", "frames")
    assert r.code == 0, r.err
    assert np.array_equal(frames_in(tmp_path / "again"), base)

    r = svd("weights", "import", files.single)
    assert r.code == 0, r.err
    rows = {(row["name"], row["repo"]): row for row in json.loads(svd("weights", "list", "--json").out)}
    assert rows["tiny-svd", "imported"]["source"]["sha256"] == single["sha256"]
    assert rows["tiny-svd", "single file"]["path"] == single["path"]
    r = svd("animate", PHOTO, "--model", files.single, *FAST, "--out", tmp_path / "imported")
    assert r.code == 0 and "imported copy" in r.err, r.err
    # The imported copy is fp16 (as the published diffusers checkpoints are): equal up to that rounding.
    diff = np.abs(frames_in(tmp_path / "imported").astype(int) - base)
    print(f"imported (fp16) vs file: max difference {diff.max()}, identical pixels {(diff == 0).mean():.2%}")
    assert diff.max() <= 3 and (diff == 0).mean() > 0.9


NOT_SVD = [("sd15", "a Stable Diffusion 1.x/2.x checkpoint"), ("truncated", "truncated"),
           ("unet", "an SVD UNet without its VAE and CLIP image encoder")]  # fmt: skip


@pytest.mark.parametrize("which, words", NOT_SVD)
def test_a_file_that_is_not_an_svd_checkpoint_fails_in_one_line(svd, files, tmp_path, which, words):
    path = getattr(files, which)
    r = svd("animate", PHOTO, "--model", path, *FAST, "--out", tmp_path / "x")
    assert r.code == 1 and len(r.lines) == 1, r.err
    assert r.lines[0].startswith(f"svd: error: --model {path}: ") and words in r.lines[0], r.err
    assert "Traceback" not in r.err and not (tmp_path / "x").exists()


def test_image_decoder_file_decodes_each_frame_on_its_own(files):
    from svd_cli.models.single_file import load_single_file

    temporal = load_single_file(files.single, "tiny", torch.float32).vae
    per_frame = load_single_file(files.image_decoder, "tiny", torch.float32).vae
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = per_frame.decode(latents).sample
        alone = torch.cat([per_frame.decode(latents[i : i + 1]).sample for i in range(3)])
        mixed = temporal.decode(latents, num_frames=3).sample
        # sgm's AutoencoderKL.decode: post_quant_conv, then the decoder (what diffusers' AutoencoderKL does).
        reference = files.image_vae.decode(latents).sample
        without_post_quant_conv = files.image_vae.decoder(latents)
    print(f"image decoder vs reference: max difference {(together - reference).abs().max():.2e}; skipping "
          f"post_quant_conv would differ by {(without_post_quant_conv - reference).abs().max():.2f}")  # fmt: skip
    assert (together - reference).abs().max() < 1e-5
    assert (without_post_quant_conv - reference).abs().max() > 0.1
    assert (together - alone).abs().max() < 1e-4  # no frame sees its neighbours
    assert (together - mixed).abs().max() > 0.1  # ...unlike the temporal decoder


@pytest.mark.parametrize("tiling", ["--no-vae-tiling", "--vae-tiling"])
def test_image_decoder_file_gives_the_frames_of_the_same_model_in_diffusers_layout(svd, files, tmp_path, tiling):
    runs = {}
    for name, model in (("file", files.image_decoder), ("folder", files.image_decoder_folder)):
        r = svd("animate", PHOTO, "--model", model, *FAST, tiling, "--out", tmp_path / name)
        assert r.code == 0, r.err
        runs[name] = frames_in(tmp_path / name)
    assert np.abs(runs["file"].astype(int) - runs["folder"]).max() <= 1


def test_the_test_writer_names_every_tensor_of_stabilitys_vae_as_the_reference_does():
    """tests/sgm_layout.py against the VAE tensors of Stability's files (tests/reference/: names and shapes of
    generative-models' svd.yaml / svd_image_decoder.yaml DiffusionEngines, built on the meta device at commit
    0ad7de9): at SVD's full size, the same names with the same shapes, nothing more, nothing less."""
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

    from svd_cli.models.architectures import SVD_VAE

    from .sgm_layout import vae_tensors

    reference = Path(__file__).parent / "reference"
    with torch.device("meta"):
        vaes = {
            "sgm_svd_vae.json": AutoencoderKLTemporalDecoder(**SVD_VAE),
            "sgm_svd_image_decoder_vae.json": AutoencoderKL(**SVD_VAE, up_block_types=("UpDecoderBlock2D",) * 4),
        }
    for table, vae in vaes.items():
        expected = {k: tuple(shape) for k, shape in json.loads((reference / table).read_text()).items()}
        if table == "sgm_svd_vae.json":  # the conditioning image's encoder is a whole AutoencoderKL whose decoder
            unused = ("conditioner.embedders.3.encoder.decoder.", "conditioner.embedders.3.encoder.post_quant_conv.")
            expected = {k: v for k, v in expected.items() if not k.startswith(unused)}  # never runs
        written = {k: tuple(t.shape) for k, t in vae_tensors(vae).items()}
        assert written == expected, (table, sorted(set(written) ^ set(expected))[:5])


# --- AnimateLCM -----------------------------------------------------------------------------------------------


def test_animatelcm_sampler_makes_a_video_with_one_unet_call_per_step(svd, tiny_dir, tmp_path):
    import svd_cli

    out = tmp_path / "lcm.mp4"
    r = svd("animate", PHOTO, "--model", "tiny", "--sampler", "animatelcm", "--max-cfg", "1", "--frames", "2",
            "--size", "128x64", "--seed", "5", "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    assert len(read_video(out)[1]) == 2
    settings = json.loads((tmp_path / "lcm.mp4.json").read_text())["settings"]
    assert (settings["sampler"], settings["steps"]) == ("animatelcm", 4)  # the tiny model's default steps

    model = svd_cli.load("tiny", device="cpu", memory="high")
    calls = []
    model.session.video_model.model.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    picture = Image.open(PHOTO)

    def run(**options):
        calls.clear()
        return model.animate_image(picture, frames=2, size=(128, 64), seed=5, **options).frames

    lcm = dict(sampler="animatelcm", min_cfg=1.0, max_cfg=1.0)
    four = run(steps=4, **lcm)
    assert calls == [1, 1, 1, 1]  # one UNet call per step, on one set of frames: no CFG pass
    assert np.array_equal(run(steps=4, **lcm), four)  # deterministic
    two = run(steps=2, **lcm)
    assert calls == [1, 1] and not np.array_equal(two, four)
    run(steps=2, sampler="euler", max_cfg=3.0)
    assert calls == [2, 2]  # SVD's default: CFG doubles the batch at every step
    with pytest.raises(svd_cli.OptionError, match="1-8 steps"):
        run(steps=12, **lcm)


def test_animatelcm_four_steps_cost_at_most_015_of_svd_xt_at_full_size():
    from svd_cli.flops import component_flops, video_flops

    parts = component_flops("svd-xt", 25, (1024, 576))
    svd_xt = video_flops(parts, steps=25, guided=True)
    lcm = video_flops(parts, steps=4, guided=False)
    print(f"FLOPs: SVD-XT 25 steps with CFG {svd_xt / 1e12:.0f} T, AnimateLCM 4 steps {lcm / 1e12:.0f} T, "
          f"ratio {lcm / svd_xt:.3f}")  # fmt: skip
    assert parts["unet_batch2"] == 2 * parts["unet_batch1"]
    assert lcm / svd_xt <= 0.15


def test_registry_has_animatelcm_with_four_steps_and_no_cfg():
    from svd_cli.registry import get_entry

    entry = get_entry("animatelcm-svd-xt")
    assert entry.sampler == "animatelcm" and entry.defaults["steps"] == 4 and entry.defaults["max_cfg"] == 1.0
    assert entry.repo == get_entry("svd-xt").repo and entry.unet_repo == "wangfuyun/AnimateLCM-SVD-xt"
    assert get_entry("svd-xt-file").file == "svd_xt.safetensors"


# --- LoRA and UNet ----------------------------------------------------------------------------------------------


def test_lora_scale_zero_keeps_the_frames_and_scale_one_changes_them(svd, files, tmp_path):
    base = base_frames(svd, tmp_path)
    results = {}
    for name, loras in {"zero": [f"{files.lora}:0"], "one": [f"{files.lora}:1"],
                        "halves": [f"{files.lora}:0.5", f"{files.lora}:0.5"]}.items():  # fmt: skip
        args = [a for spec in loras for a in ("--lora", spec)]
        r = svd("animate", PHOTO, "--model", "tiny", *FAST, *args, "--out", tmp_path / name)
        assert r.code == 0, r.err
        results[name] = frames_in(tmp_path / name)
    assert np.array_equal(results["zero"], base)
    assert np.abs(results["one"].astype(int) - base).max() > 10
    # Two LoRAs stay unfused and add up: half and half is the fused whole, up to rounding.
    assert np.abs(results["halves"].astype(int) - results["one"]).max() <= 2
    recipe = json.loads((tmp_path / "halves.frames.json").read_text())
    assert [(item["path"], item["scale"]) for item in recipe["model"]["lora"]] == [(str(files.lora), 0.5)] * 2


def test_an_incompatible_lora_fails_in_one_line(svd, files, tmp_path):
    r = svd("animate", PHOTO, "--model", "tiny", *FAST, "--lora", files.bad_lora, "--out", tmp_path / "x")
    assert r.code == 2 and len(r.lines) == 1 and not (tmp_path / "x").exists(), r.err
    assert r.lines[0].startswith(f"svd: error: --lora {files.bad_lora}: does not fit this model's UNet"), r.err


def test_unet_replaces_only_the_unet(svd, files, tmp_path):
    from svd_cli.models.loading import load_model
    from svd_cli.models.sources import resolve_model

    base = base_frames(svd, tmp_path)
    r = svd("animate", PHOTO, "--model", "tiny", *FAST, "--unet", files.unet, "--out", tmp_path / "u")
    assert r.code == 0, r.err
    assert np.abs(frames_in(tmp_path / "u").astype(int) - base).max() > 10
    assert json.loads((tmp_path / "u.frames.json").read_text())["model"]["unet"]["path"] == str(files.unet)

    source = resolve_model("tiny")
    plain = load_model(source, torch.device("cpu"), torch.float32)
    swapped = load_model(source, torch.device("cpu"), torch.float32, unet=files.unet)
    for role in ("vae", "image_encoder"):
        a, b = getattr(plain, role).state_dict(), getattr(swapped, role).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), role
    theirs = files.other_unet.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in swapped.unet.state_dict().items())
