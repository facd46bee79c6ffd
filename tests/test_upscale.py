"""The upscale stage's engine: a spandrel upscaler from a safetensors file, tiled without seams, within each
memory profile, downloaded like the SVD weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.errors import ModelLoadError, ModelUnavailableError, UsageError

from .conftest import EXAMPLES, Recorder, run_subprocess
from .test_hub_download import FakeHub, svd_env

ESRGAN_REPO, ESRGAN_FILE = "kornia/real_esrgan", "RealESRGAN_x2plus.safetensors"
GIB = 2**30


def frames_256x128(count: int = 3) -> np.ndarray:
    """The example photo at 256x128, a little brighter each frame."""
    photo = np.asarray(Image.open(EXAMPLES / "coffee.png").convert("RGB").resize((256, 128)), dtype=np.int16)
    return np.stack([np.clip(photo + 20 * i, 0, 255).astype(np.uint8) for i in range(count)])


@pytest.fixture(scope="module")
def tiny_upscaler():
    from svd_cli.models.sources import resolve_model
    from svd_cli.models.upscaler import load_upscaler

    source = resolve_model("tiny-upscaler", kind="upscaler")
    return source, load_upscaler(source, torch.device("cpu"))


def save_network(path, **changes) -> None:
    from safetensors.torch import save_file

    from svd_cli.models.upscaler import build_upscaler_network

    save_file(build_upscaler_network("tiny-upscaler", seed=1, **changes).state_dict(), str(path))


# --- the built-in tiny upscaler, through the normal path -------------------------------------------------------


def test_the_tiny_upscaler_is_a_safetensors_file_loaded_through_spandrel(tiny_upscaler):
    from svd_cli.models.tiny import TINY_SEED, tiny_file
    from svd_cli.models.upscaler import build_upscaler_network

    source, upscaler = tiny_upscaler
    assert source.path == tiny_file("tiny-upscaler") and source.path.suffix == ".safetensors"
    assert source.single_file["sha256"] == upscaler.sha256 and len(upscaler.sha256) == 64
    assert (upscaler.descriptor.architecture.name, upscaler.descriptor.purpose, upscaler.scale) == ("ESRGAN", "SR", 2)
    assert upscaler.dtype == torch.float32  # on the CPU; fp16 is for CUDA
    built = build_upscaler_network("tiny-upscaler", seed=TINY_SEED).state_dict()
    loaded = upscaler.descriptor.model.state_dict()
    assert built.keys() == loaded.keys() and all(torch.equal(built[k], loaded[k]) for k in built)


def test_256x128_frames_become_512x256_and_tiles_leave_no_seams(tiny_upscaler):
    from svd_cli.stages import Clip
    from svd_cli.stages.upscale import upscale_clip

    _, upscaler = tiny_upscaler
    frames = frames_256x128()
    progress = Recorder()
    clip = Clip(frames=frames, fps=8, stages=[{"stage": "animate"}], warnings=["flat"])
    whole = upscale_clip(clip, upscaler, None, progress)
    assert whole.frames.shape == (3, 256, 512, 3) and whole.frames.dtype == np.uint8
    assert (whole.width, whole.height, whole.fps, whole.warnings) == (512, 256, 8, ["flat"])
    assert whole.stages == [{"stage": "animate"}, {"stage": "upscale", "factor": 2, "model": "tiny-upscaler",
                                                   "sha256": upscaler.sha256, "tile": None}]  # fmt: skip
    assert clip.frames.shape == (3, 128, 256, 3) and len(clip.stages) == 1  # the input clip is left as it was
    assert progress.events == [("start", "upscale", 3), *[("advance", 1)] * 3, ("end",)]
    assert len(np.unique(whole.frames)) > 16  # the network ran: not one flat colour
    assert np.array_equal(upscaler.upscale(frames, None), whole.frames)  # deterministic

    # 64-pixel tiles (4 x 2 of them, 16 pixels shared) blended across the overlap: measured max difference 2 of
    # 255 from the whole frame at a few pixels (random weights, 1 block: the receptive field outgrows the overlap).
    tiled = upscale_clip(clip, upscaler, 64).frames
    difference = np.abs(tiled.astype(int) - whole.frames)
    assert difference.max() <= 3 and difference.mean() < 0.1, (difference.max(), difference.mean())


def test_tile_spans_cover_the_side_evenly_with_the_overlap():
    from svd_cli.models.upscaler import OVERLAP, tile_spans

    for length, tile in [(576, 512), (1024, 512), (576, 256), (1024, 128), (130, 64), (100, 200)]:
        spans = tile_spans(length, tile)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert len({end - start for start, end in spans}) == 1  # one shape for every tile
        assert all(end - start <= tile + 3 for start, end in spans)
        assert all(b[0] <= a[1] - OVERLAP for a, b in zip(spans, spans[1:], strict=False))


def test_release_leaves_none_of_its_weights_on_the_device(tiny_upscaler):
    """Loaded onto the simulated GPU ("meta", every live byte counted), then released before the next video."""
    from svd_cli.models.upscaler import load_upscaler
    from svd_cli.planning.simulate import _simulated

    source, _ = tiny_upscaler
    upscaler = load_upscaler(source, torch.device("cpu"))
    weights = sum(p.numel() * p.element_size() for p in upscaler.descriptor.model.parameters())
    with _simulated(math_attention=False) as counter:
        upscaler.descriptor.to(torch.device("meta"))  # what load_upscaler does on a GPU
        upscaler.device = torch.device("meta")
        on_device = counter.live
        upscaler.release()
        after = counter.live
    assert on_device == weights > 0 and after == 0
    assert upscaler.descriptor.device.type == "cpu" and upscaler.device.type == "cpu"


# --- files that are refused, each in one sentence --------------------------------------------------------------


def refusal(spec) -> str:
    from svd_cli.models.sources import resolve_model
    from svd_cli.models.upscaler import load_upscaler

    with pytest.raises((UsageError, ModelLoadError)) as info:
        load_upscaler(resolve_model(str(spec), kind="upscaler"), torch.device("cpu"))
    return str(info.value)


def test_a_pickle_is_refused_and_so_is_anything_spandrel_does_not_recognise(tmp_path):
    pickle = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"x": torch.zeros(1)}, pickle)
    assert refusal(pickle) == (
        f"upscaler {pickle}: a pickle file (.pth), which can run code when it is loaded, so svd reads upscalers only "
        "from .safetensors files: convert it to safetensors or choose a .safetensors upscaler."
    )
    from safetensors.torch import save_file

    unknown = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}, str(unknown))
    message = refusal(unknown)
    assert message.startswith(f"upscaler {unknown}: not an upscaler spandrel recognises (its tensors match none")
    assert message.endswith("; choose a Real-ESRGAN, ESRGAN or SwinIR .safetensors file.")

    damaged = tmp_path / "cut.safetensors"
    save_network(damaged)
    damaged.write_bytes(damaged.read_bytes()[:5000])
    assert refusal(damaged).startswith(f"upscaler {damaged}: is truncated")
    assert refusal(damaged).endswith("; replace it with a complete copy.")

    assert refusal(tmp_path / "gone.safetensors") == (
        f"upscaler {tmp_path / 'gone.safetensors'}: no such file; name an existing .safetensors upscaler or a "
        "registry upscaler."
    )
    assert refusal("realesrgan").startswith("upscaler realesrgan: not an upscaler name (realesrgan-x2, tiny-upscaler)")
    assert refusal("svd-xt") == (
        "upscaler svd-xt: an image-to-video model, but this setting takes an upscaler (realesrgan-x2, tiny-upscaler, "
        "a .safetensors file)."
    )


def test_a_4x_upscaler_is_refused(tmp_path):
    four = tmp_path / "RealESRGAN_x4plus.safetensors"
    save_network(four, in_nc=3, shuffle_factor=None)  # x4plus's layout: no pixel-unshuffle, 4x
    assert refusal(four) == (
        f"upscaler {four}: a ESRGAN SR model that enlarges 4x, but the upscale stage needs a 2x RGB upscaler; "
        "choose one such as realesrgan-x2."
    )


# --- the registry: listed, refused as a video model, downloaded like the SVD weights --------------------------


def test_weights_list_shows_the_upscalers_and_model_refuses_one(svd, tiny_upscaler):
    rows = {row["name"]: row for row in json.loads(svd("weights", "list", "--json").out)}
    assert rows["realesrgan-x2"] | {"downloaded": None} == rows["realesrgan-x2"] | {
        "kind": "upscaler", "repo": ESRGAN_REPO, "frames": None, "download_gb": 0.067, "downloaded": None}  # fmt: skip
    assert rows["tiny-upscaler"]["downloaded"] is True and rows["tiny-upscaler"]["repo"] == "built-in"
    table = svd("weights", "list").out
    assert "realesrgan-x2" in table and "tiny-upscaler" in table
    assert svd("weights", "verify", "tiny-upscaler").code == 0

    r = svd("animate", EXAMPLES / "coffee.png", "--model", "realesrgan-x2")
    assert r.code == 2 and r.lines == [
        "svd: error: --model realesrgan-x2: an upscaler, but this setting takes an image-to-video model (svd, svd-xt, "
        "svd-xt-1.1, tiny, sv3d-u, sv3d-p, tiny-sv3d, tiny-sv3d-p, animatelcm-svd-xt, svd-xt-file, a folder or a "
        "Hub repo id)."
    ]


def test_realesrgan_x2_downloads_with_progress_and_offline_fails_like_svd(tiny_upscaler, tmp_path):
    """`svd weights pull realesrgan-x2` against a fake Hub; the file it fetches loads as a 2x upscaler."""
    source, _ = tiny_upscaler
    data = source.path.read_bytes()  # a valid 2x upscaler stands in for the 67 MB file
    hub = FakeHub({ESRGAN_FILE: data, "README.md": b"# fake real_esrgan\n"}, repo=ESRGAN_REPO)
    try:
        pulled = run_subprocess("weights", "pull", "realesrgan-x2", env=svd_env(hub.url, tmp_path / "hf"))
    finally:
        hub.stop()
    assert pulled.returncode == 0, pulled.stderr
    assert f"Downloading {ESRGAN_FILE} (about 67.0 MB) from the Hugging Face Hub ({ESRGAN_REPO}" in pulled.stderr
    assert hub.fetched("GET") == [ESRGAN_FILE]
    cached = next((tmp_path / "hf" / "hub").glob(f"models--kornia--real_esrgan/snapshots/*/{ESRGAN_FILE}"))
    assert f"realesrgan-x2 is ready: {cached}" in pulled.stderr and cached.read_bytes() == data

    offline_env = svd_env(hub.url, tmp_path / "hf") | {"HF_HUB_OFFLINE": "1"}
    listed = run_subprocess("weights", "list", "--json", env=offline_env)
    assert {row["name"]: row["downloaded"] for row in json.loads(listed.stdout)}["realesrgan-x2"] is True

    offline = run_subprocess("weights", "pull", "realesrgan-x2",
                             env=svd_env(hub.url, tmp_path / "empty") | {"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert offline.returncode == 1 and "Traceback" not in offline.stderr
    assert offline.stderr.strip().splitlines() == [
        f"svd: error: realesrgan-x2 needs {ESRGAN_REPO}/{ESRGAN_FILE}, which is not downloaded, and HF_HUB_OFFLINE=1 "
        "forbids downloading it: unset HF_HUB_OFFLINE and run `svd weights pull realesrgan-x2` while online, or use "
        "--upscaler tiny-upscaler."
    ]
    renamed = FakeHub({"README.md": b"# the file is gone\n"}, repo=ESRGAN_REPO)
    try:
        missing = run_subprocess("weights", "pull", "realesrgan-x2", env=svd_env(renamed.url, tmp_path / "empty"))
    finally:
        renamed.stop()
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1] == (
        f"svd: error: {ESRGAN_REPO} at revision main has no file {ESRGAN_FILE} (the Hub answered 404): the registry "
        "entry realesrgan-x2 in weights.toml is out of date; update svd, or use --upscaler tiny-upscaler."
    )


def test_a_downloaded_upscaler_missing_offline_is_named(monkeypatch):
    from svd_cli.models.sources import resolve_model

    with pytest.raises(ModelUnavailableError) as info:
        resolve_model("realesrgan-x2", kind="upscaler", download=False)
    assert str(info.value) == "realesrgan-x2 is not downloaded yet: run `svd weights pull realesrgan-x2`."


# --- memory: each profile's tile fits beside what the profile keeps on the device for SVD ----------------------


def svd_xt_component_bytes() -> dict[str, int]:
    """SVD-XT's UNet, VAE and image encoder at fp16, from their configs (built on "meta": shapes, no data)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from svd_cli.models.architectures import ARCHITECTURES

    unet, vae, clip = ARCHITECTURES["svd-xt"]
    with torch.device("meta"):
        modules = {
            "unet": UNetSpatioTemporalConditionModel.from_config(unet),
            "vae": AutoencoderKLTemporalDecoder.from_config(vae),
            "image_encoder": CLIPVisionModelWithProjection(
                CLIPVisionConfig.from_dict({k: v for k, v in clip.items() if not k.startswith("_")})
            ),
        }
    return {name: sum(p.numel() for p in m.parameters()) * 2 for name, m in modules.items()}


def test_each_profiles_upscale_tile_fits_beside_svd_on_that_profile():
    """Real-ESRGAN x2plus at full size (23 blocks, 64 features, fp16) on fake tensors, one 1024x576 frame.

    SVD-XT is still loaded when its video is upscaled: all its weights on high and balanced, at most its largest
    component under streamed offload (low: the components it moves whole), about one layer under sequential
    offload (min). Targets: balanced 7.5 GiB, low 5, min 3 (memory/profiles.py); high is held to balanced's
    target, below high's own SVD peak.
    Measured: high 0.95 GiB (whole frame), balanced 0.23, low 0.14, min 0.11; SVD-XT's weights 4.24 GiB.
    """
    from svd_cli.memory.profiles import PROFILE_ORDER, tile_for
    from svd_cli.planning.upscale import simulate_upscale

    # Two of the 23 blocks simulated, the other 21 blocks' weights added: the same peak as the full network,
    # checked here on balanced's tile (the full run takes seconds per tile size, the reduced one a fraction).
    balanced = tile_for("balanced")
    assert simulate_upscale(balanced).peak_bytes == simulate_upscale(balanced, blocks=2).peak_bytes

    weights = svd_xt_component_bytes()
    resident = {"high": sum(weights.values()), "balanced": sum(weights.values()), "low": max(weights.values()),
                "min": 64 * 2**20}  # fmt: skip
    target = {"high": 7.5 * GIB, "balanced": 7.5 * GIB, "low": 5 * GIB, "min": 3 * GIB}
    peaks = {}
    for profile in PROFILE_ORDER:
        run = simulate_upscale(tile_for(profile), blocks=2)
        assert run.weights_bytes == 16_703_171 * 2  # RealESRGAN_x2plus's 16.7 M parameters at fp16
        peaks[profile] = run.peak_bytes
        assert resident[profile] + run.peak_bytes <= target[profile], (profile, resident[profile], run.peak_bytes)
    print({p: round(b / GIB, 3) for p, b in peaks.items()}, round(sum(weights.values()) / GIB, 2))
    assert peaks["high"] >= peaks["balanced"] >= peaks["low"] >= peaks["min"]
    assert peaks["balanced"] <= 0.3 * GIB and peaks["min"] <= 0.15 * GIB  # tiles bound the frame's activations
