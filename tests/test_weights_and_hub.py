"""The weights registry, `svd weights ...`, and every way getting weights can fail.

The network is simulated only at the Hugging Face Hub boundary: HF_HUB_OFFLINE, an endpoint nobody listens
on, or a local HTTP server answering like the Hub does for gated and missing repos. Nothing in diffusers or
torch is mocked; huggingface-hub's own code runs, in a real `svd` process.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from .conftest import EXAMPLES, ROOT, TINY_FAST, run_subprocess

COFFEE = EXAMPLES / "coffee.png"


# --- the registry ----------------------------------------------------------------------------------------


def test_registry_names_the_three_checkpoints_and_tiny():
    from svd_cli.registry import load_registry

    reg = load_registry()
    assert list(reg) == [
        "svd", "svd-xt", "svd-xt-1.1", "tiny", "sv3d-u", "sv3d-p", "tiny-sv3d", "tiny-sv3d-p", "animatelcm-svd-xt",
        "svd-xt-file", "sdxl-turbo", "tiny-t2i", "realesrgan-x2", "tiny-upscaler", "rife", "tiny-rife", "taesd",
        "tiny-taesd", "u2net", "tiny-u2net",
    ]  # fmt: skip
    # rembg's own address and MD5 for u2net.onnx (rembg/sessions/u2net.py, rembg 2.0.86).
    assert reg["u2net"].url == "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
    assert reg["u2net"].md5 == "60024c5c889badc19c04ad937298a77b" and reg["u2net"].repo is None
    assert reg["svd"].repo == "stabilityai/stable-video-diffusion-img2vid" and reg["svd"].frames == 14
    assert reg["svd-xt"].repo == "stabilityai/stable-video-diffusion-img2vid-xt" and reg["svd-xt"].frames == 25
    xt11 = reg["svd-xt-1.1"]
    assert xt11.repo == "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    assert xt11.gated and xt11.fixed_conditioning and xt11.defaults["motion_bucket"] == 127
    assert all(e.variant == "fp16" and e.revision and e.license for e in reg.values() if e.repo and not e.file)
    assert [e.name for e in reg.values() if e.kind == "text-to-image"] == ["sdxl-turbo", "tiny-t2i"]
    assert reg["rife"].revision == "26442e52cc30b88c5cb490702647b8de9aaee8a7"  # the commit the network was checked for
    assert {(e.kind, e.family) for e in reg.values() if e.frames} == {("video", f) for f in ("svd", "sv3d", "sv3d-p")}
    assert {e.family for e in reg.values() if e.kind != "video"} == {None}


@pytest.mark.parametrize(
    ("entry", "wording"),
    [
        ('kind = "svd"', "models.broken.kind 'svd' is not one of video, text-to-image, upscaler"),
        ('kind = "video"', "models.broken.family None is not one of svd, sv3d, sv3d-p; fix the registry."),
        ('kind = "upscaler"\nfamily = "svd"', "models.broken is 'upscaler', which has no family; delete its family."),
    ],
)
def test_registry_refuses_an_entry_whose_kind_and_family_disagree(entry, wording, tmp_path, monkeypatch):
    from svd_cli import registry
    from svd_cli.errors import SvdError

    broken = tmp_path / "weights.toml"
    broken.write_text(f'[models.broken]\n{entry}\nrepo = "a/b"\n', encoding="utf-8")
    monkeypatch.setattr(registry, "registry_path", lambda: broken)
    registry.load_registry.cache_clear()
    try:
        with pytest.raises(SvdError) as refused:
            registry.load_registry()
    finally:
        registry.load_registry.cache_clear()
    assert str(refused.value).startswith("weights.toml: ") and wording in str(refused.value)


def test_download_patterns_fetch_only_fp16_safetensors_and_configs():
    from svd_cli.models.layout import allow_patterns

    patterns = allow_patterns("fp16", "video", "svd")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
    assert "image_encoder/model.fp16.safetensors" in patterns
    assert not any(p.endswith((".bin", ".ckpt")) or p == "*" for p in patterns)


def test_text_to_image_downloads_take_the_components_of_their_kind():
    """Against SDXL-Turbo's file list: both text encoders and tokenizers, fp16 only, no single-file copies."""
    import fnmatch

    from svd_cli.models.layout import allow_patterns

    repo = ["model_index.json", "sd_xl_turbo_1.0_fp16.safetensors", "sd_xl_turbo_1.0.safetensors",
            "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
            "text_encoder_2/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors",
            "text_encoder_2/model.fp16.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer_2/vocab.json",
            "tokenizer_2/merges.txt", "image_quality_one_step.png", "README.md"]  # fmt: skip
    patterns = allow_patterns("fp16", "text-to-image")
    fetched = sorted(f for f in repo if any(fnmatch.fnmatch(f, p) for p in patterns))
    assert [f for f in fetched if f.endswith(".safetensors")] == [
        "text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
    ]  # fmt: skip
    assert {"tokenizer/vocab.json", "tokenizer_2/merges.txt", "model_index.json"} <= set(fetched)
    assert "image_encoder/model.fp16.safetensors" not in patterns


def test_wheel_ships_weights_toml(tmp_path):
    """weights.toml lives at the top of the repo and must also be inside the installed package."""
    from hatchling.builders.wheel import WheelBuilder

    wheel = Path(next(iter(WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"]))))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "svd_cli/weights.toml" in names
        assert zf.read("svd_cli/weights.toml") == (ROOT / "weights.toml").read_bytes()
        assert "svd_cli/cli/__init__.py" in names and "svd_cli/models/adapters.py" in names


# --- svd weights list / path -----------------------------------------------------------------------------


def test_weights_list_shows_models_and_what_is_on_disk(svd, tiny_dir):
    r = svd("weights", "list", "--json")
    assert r.code == 0, r.err
    rows = {row["name"]: row for row in json.loads(r.out)}
    assert rows["tiny"]["downloaded"] is True and rows["tiny"]["size_bytes"] > 100_000
    assert rows["svd-xt"]["downloaded"] is False and rows["svd-xt"]["frames"] == 25
    table = svd("weights", "list")
    assert table.code == 0
    assert "svd-xt-1.1" in table.out and "stabilityai/stable-video-diffusion-img2vid-xt" in table.out


def test_weights_list_and_help_do_not_import_torch(tiny_dir):
    code = (
        "import sys; from svd_cli.cli import main; "
        "rc = main(['weights', 'list']); main(['--help']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'diffusers' not in sys.modules; sys.exit(rc)"
    )
    proc = run_subprocess_code(code)
    assert proc.returncode == 0, proc.stderr
    assert "tiny" in proc.stdout


def run_subprocess_code(code: str, env: dict | None = None):
    import os
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_weights_path(svd, tiny_dir):
    r = svd("weights", "path", "tiny")
    assert r.code == 0 and Path(r.out.strip()) == tiny_dir
    r = svd("weights", "path", "svd-xt")
    assert r.code == 1
    assert r.lines == ["svd: error: svd-xt is not downloaded yet: run `svd weights pull svd-xt`."]


# --- when the weights cannot be had ----------------------------------------------------------------------


def test_offline_without_weights_names_the_fix(svd, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = svd("animate", COFFEE, "--model", "svd-xt")
    assert r.code == 1
    error = r.lines[-1]
    assert error.startswith("svd: error: svd-xt is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it")
    assert "`svd weights pull svd-xt`" in error and "--model tiny" in error
    assert "Traceback" not in r.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_names_the_fix(tmp_path):
    port = _free_port()  # nothing listens there: connections are refused, as with no network
    proc = run_subprocess("animate", COFFEE, "--model", "svd", env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("svd: error: Cannot reach the Hugging Face Hub to download svd")
    assert "`svd weights pull svd`" in error
    assert "Traceback" not in proc.stderr


def test_no_network_with_a_hub_repo_id_fails_fast_in_one_line(tmp_path):
    """Issue 14.10: a repo id (not a registry name) used to retry for 26 s, printing 11 lines first."""
    import time

    port = _free_port()
    started = time.monotonic()
    proc = run_subprocess(
        "animate", COFFEE, "--model", "someone/model", env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "svd: error: Cannot reach the Hugging Face Hub to download someone/model: connect to the internet and run "
        "`svd weights pull someone/model` (files already downloaded are kept), or use --model tiny or a local folder."
    ]
    assert time.monotonic() - started < 15  # no retry back-off (the process itself takes a few seconds)


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the Hub answers for a gated repo without a token, or a missing repo."""

    mode = "gated"

    def _answer(self):
        code, error = (401, "GatedRepo") if self.mode == "gated" else (404, "RepoNotFound")
        body = json.dumps({"error": "Access restricted"}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error)
        self.send_header("X-Error-Message", "Access to model is restricted. You must be authenticated.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    servers = []

    def start(mode: str) -> str:
        handler = type("Handler", (_FakeHub,), {"mode": mode})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def test_gated_model_without_token_names_the_fix(fake_hub):
    endpoint = fake_hub("gated")
    proc = run_subprocess("animate", COFFEE, "--model", "svd-xt-1.1", env={"HF_ENDPOINT": endpoint})
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "svd-xt-1.1 (stabilityai/stable-video-diffusion-img2vid-xt-1-1) is gated" in error
    assert "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt-1-1" in error
    assert "`hf auth login`" in error and "HF_TOKEN" in error and "`svd weights pull svd-xt-1.1`" in error
    assert "Traceback" not in proc.stderr


def test_weights_pull_of_gated_model_fails_the_same_way(fake_hub):
    endpoint = fake_hub("gated")
    proc = run_subprocess("weights", "pull", "svd-xt-1.1", env={"HF_ENDPOINT": endpoint})
    assert proc.returncode == 1
    assert "is gated" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_hub_repo_names_the_fix(fake_hub):
    endpoint = fake_hub("missing")
    proc = run_subprocess("animate", COFFEE, "--model", "someone/no-such-model", env={"HF_ENDPOINT": endpoint})
    assert proc.returncode == 1
    assert "someone/no-such-model was not found on the Hub" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- local folders ---------------------------------------------------------------------------------------


def test_local_model_folder_loads_through_the_same_path(svd, tiny_dir, tmp_path):
    folder = tmp_path / "my model"
    shutil.copytree(tiny_dir, folder)
    r = svd("animate", COFFEE, *TINY_FAST[2:], "--model", folder, "--seed", "5", "--out", tmp_path / "a.mp4")
    assert r.code == 0, r.err
    recipe = json.loads((tmp_path / "a.mp4.json").read_text())
    assert recipe["model"]["name"] == "my model" and recipe["model"]["path"] == str(folder.resolve())


def test_pickle_only_weights_are_refused(svd, tiny_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    r = svd("animate", COFFEE, *TINY_FAST[2:], "--model", folder)
    assert r.code == 1
    assert r.lines[-1].startswith(
        f"svd: error: {folder / 'unet'} has only pickle weights (diffusion_pytorch_model.bin)"
    )
    assert "safetensors only" in r.lines[-1]


def test_a_file_published_outside_the_hub_is_downloaded_checked_and_kept(svd, tmp_path, monkeypatch):
    """u2net.onnx lives in rembg's GitHub releases: `svd weights pull u2net` fetches it from the registry's address
    (here a local server), keeps it only when its MD5 is the registry's, and says in one line why it cannot."""
    import hashlib
    from dataclasses import replace

    from svd_cli import registry
    from svd_cli.models.cutout import tiny_u2net_bytes

    served = {"body": tiny_u2net_bytes()}

    class Releases(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = served["body"]
            self.send_response(200 if self.path == "/u2net.onnx" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Releases)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}/u2net.onnx"
    md5 = hashlib.md5(served["body"]).hexdigest()
    entries = dict(registry.load_registry())
    entries["u2net"] = replace(entries["u2net"], url=address, md5=md5)
    monkeypatch.setattr(registry, "load_registry", lambda: entries)
    monkeypatch.setenv("SVD_HOME", str(tmp_path))
    kept = tmp_path / "downloads" / md5 / "u2net.onnx"
    try:
        served["body"] = b"\x08" + served["body"][1:-1]  # cut short: not the file the registry's MD5 names
        r = svd("weights", "pull", "u2net")
        assert r.code == 1
        assert r.lines[-1].startswith(f"svd: error: The file downloaded from {address} is not the u2net svd expects")
        assert "run `svd weights pull u2net` again later" in r.lines[-1]
        assert not kept.exists() and not list((tmp_path / "downloads" / md5).iterdir())  # nothing half-written left

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        r = svd("weights", "pull", "u2net")
        assert r.code == 1 and r.lines[-1] == (
            "svd: error: u2net (u2net.onnx) is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it: unset "
            "HF_HUB_OFFLINE and run `svd weights pull u2net` while online, or use --background-remover tiny-u2net."
        )
        monkeypatch.delenv("HF_HUB_OFFLINE")

        served["body"] = tiny_u2net_bytes()
        r = svd("weights", "pull", "u2net")
        assert r.code == 0, r.err
        assert kept.read_bytes() == served["body"]
        assert f"Downloading u2net.onnx (about 176 MB) from {address}" in r.err
    finally:
        server.shutdown()
