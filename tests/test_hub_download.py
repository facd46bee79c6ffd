"""A successful `svd weights pull` through huggingface-hub's real download code, against a fake Hub.

Only the network is simulated: a small HTTP server on 127.0.0.1 answers the requests huggingface-hub 2.4 makes
(repo info, recursive tree listing, HEAD/GET on /resolve, LFS files redirected to a separate "CDN" origin with
Range support), serving the tiny model's files under the fp16 names the `svd` registry entry asks for. svd runs
as a subprocess because huggingface-hub reads HF_ENDPOINT and HF_HOME when it is imported.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from .conftest import EXAMPLES, run_subprocess

REPO = "stabilityai/stable-video-diffusion-img2vid"
COMMIT = "5e0f8bc59a3f2a1c7d4e6b8a90c1d2e3f4a5b6c7"  # fixed fake commit sha of the repo's `main`
MOVED = "9a8b7c6d5e4f30211203948576a6b5c4d3e2f1a0"  # `main` after the repo changed
UNET = "unet/diffusion_pytorch_model.fp16.safetensors"
# What svd must fetch for the `svd` registry entry (configs + one fp16 safetensors per component) ...
WANTED = {
    "model_index.json",
    "feature_extractor/preprocessor_config.json",
    "image_encoder/config.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    UNET,
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "image_encoder/model.fp16.safetensors",
}
# ... and what the repo also holds but must never be downloaded (the real repo has multi-GB files like these).
UNWANTED = {
    ".gitattributes",
    "README.md",
    "svd.safetensors",
    "svd_image_decoder.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.fp16.bin",
}


def repo_files(tiny_dir: Path) -> dict[str, bytes]:
    """The fake repo: the tiny model's files renamed to fp16 variants, plus files svd must not fetch."""
    files = {}
    for path in tiny_dir.rglob("*"):
        if path.is_file():
            name = path.relative_to(tiny_dir).as_posix()
            if name.endswith(".safetensors"):
                name = name.replace(".safetensors", ".fp16.safetensors")
            files[name] = path.read_bytes()
    assert set(files) == WANTED, "the tiny model's layout changed; update WANTED"
    files["unet/diffusion_pytorch_model.safetensors"] = b"\2" * 2 * len(files[UNET])  # fp32: twice the size
    files["vae/diffusion_pytorch_model.fp16.bin"] = b"not a pickle, never fetched"
    files["svd.safetensors"] = b"\0" * 3_000_000
    files["svd_image_decoder.safetensors"] = b"\1" * 1_000_000
    files[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    files["README.md"] = b"# fake stable-video-diffusion-img2vid\n"
    return files


CUT_AT = 12 * 2**20  # past huggingface-hub's first 10 MiB chunk


def with_big_unet(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same repo with a 15 MiB fp16 unet: identical tensors, the safetensors JSON header padded with spaces
    (to just under the 16 MiB of header svd parses).

    huggingface-hub 2.4 writes a download to disk in 10 MiB chunks and, after a dropped connection, asks for the
    rest from the end of the last whole chunk; so only a file cut after its first 10 MiB can show a Range request.
    """
    data = files[UNET]
    size = int.from_bytes(data[:8], "little")
    pad = 15 * 2**20 - len(data)
    pad -= pad % 8  # keep the tensor data 8-byte aligned
    padded = (size + pad).to_bytes(8, "little") + data[8 : 8 + size] + b" " * pad + data[8 + size :]
    return files | {UNET: padded}


def is_lfs(path: str) -> bool:
    return path.endswith((".safetensors", ".bin"))


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Two local HTTP servers sharing one repo: the Hub API (HF_ENDPOINT) and a CDN for LFS blobs.

    Every request is recorded as {"method", "file", "range"} (file: the repo path it was for, or the URL path).
    `cut_file` makes the first GET of that file stop after CUT_AT bytes, half-way for smaller files (the full
    Content-Length promised, then the connection closed); with `vanish_after_cut` both servers also stop
    listening, as when the network goes away.
    """

    def __init__(
        self,
        files: dict[str, bytes],
        cut_file: str | None = None,
        vanish_after_cut: bool = False,
        repo: str = REPO,
        revisions: tuple[str, ...] | None = None,
        commit: str = COMMIT,
    ):
        self.files, self.repo, self.commit = files, repo, commit
        self.revisions = revisions or ("main", commit)
        self.sha256 = {hashlib.sha256(data).hexdigest(): path for path, data in files.items()}
        self.cut_file, self.vanish_after_cut = cut_file, vanish_after_cut
        self.requests: list[dict] = []
        self.served: set[str] = set()  # files whose full body was sent
        self.cond = threading.Condition()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.api.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"
        self.stopped = self.cut_done = False
        self.stop_lock = threading.Lock()  # the test and a handler thread may both stop the servers
        for server in (self.api, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        with self.stop_lock:
            if not self.stopped:
                self.stopped = True
                for server in (self.api, self.cdn):
                    server.shutdown()
                    server.server_close()

    def fetched(self, method: str = "GET") -> list[str]:
        """The repo files requested with `method`, in order (API calls left out)."""
        return [r["file"] for r in self.requests if r["method"] == method and r["file"] in self.files]

    def tree(self) -> list[dict]:
        entries, folders = [], sorted({p.rsplit("/", 1)[0] for p in self.files if "/" in p})
        for folder in folders:
            entries.append({"type": "directory", "path": folder, "oid": git_oid(folder.encode()), "size": 0})
        for path, data in sorted(self.files.items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def _route(self):
        hub, path = self.hub, unquote(urlsplit(self.path).path)
        on_cdn = self.server is hub.cdn
        file = hub.sha256.get(path.lstrip("/")) if on_cdn else None
        resolve = f"/{hub.repo}/resolve/"
        if not on_cdn and path.startswith(resolve):
            revision, _, file = path[len(resolve) :].partition("/")
            file = file if revision in hub.revisions and file in hub.files else None
        hub.requests.append({"method": self.command, "file": file or path, "range": self.headers.get("Range")})
        if on_cdn and file:
            return self._send_blob(file)
        if file:  # /resolve on the Hub: small files directly, LFS files as a redirect to the CDN
            data = hub.files[file]
            headers = {"X-Repo-Commit": hub.commit, "ETag": f'"{git_oid(data)}"'}
            if is_lfs(file):
                sha = hashlib.sha256(data).hexdigest()
                headers |= {"Location": f"{hub.cdn_url}/{sha}", "X-Linked-Etag": f'"{sha}"'}
                return self._send(302, b"", headers | {"X-Linked-Size": str(len(data))})
            return self._send(200, data, headers, file=file)
        if path == f"/api/models/{hub.repo}/revision/main":
            siblings = [{"rfilename": p} for p in hub.files]
            info = {"id": hub.repo, "sha": hub.commit, "private": False, "siblings": siblings}
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        if path == f"/api/models/{hub.repo}/tree/{hub.commit}":
            return self._send(200, json.dumps(hub.tree()).encode(), {"Content-Type": "application/json"})
        error = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
        self._send(404, b'{"error": "Entry not found"}', error)

    def _send_blob(self, file: str):
        """Serve an LFS blob, honouring `Range: bytes=N-`, and breaking off the first transfer of `cut_file`."""
        hub, data = self.hub, self.hub.files[file]
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers["Range"] else 0
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if self.command == "GET" and file == hub.cut_file and not hub.cut_done:
            hub.cut_done = True
            if hub.vanish_after_cut:  # let the other downloads finish first, so the test knows what was kept
                with hub.cond:
                    hub.cond.wait_for(lambda: WANTED - {file} <= hub.served, timeout=10)
            self.send_response(200)
            for key, value in (headers | {"Content-Length": str(len(data))}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: CUT_AT if len(data) > CUT_AT else len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            if hub.vanish_after_cut:
                threading.Thread(target=hub.stop, daemon=True).start()
            return
        self._send(206 if start else 200, data[start:], headers, file=file)

    def _send(self, code: int, body: bytes, headers: dict, file: str | None = None):
        self.send_response(code)
        for key, value in ({"Content-Length": str(len(body))} | headers).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)
            if file:
                with self.hub.cond:
                    self.hub.served.add(file)
                    self.hub.cond.notify_all()


def svd_env(hub_url: str, hf_home: Path) -> dict:
    """A private HF cache, so this file's downloads are invisible to the other tests (they expect none)."""
    return {"HF_ENDPOINT": hub_url, "HF_HOME": str(hf_home)}


def snapshot(hf_home: Path) -> Path:
    return hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT


@pytest.fixture(scope="module")
def pulled(tiny_dir, tmp_path_factory):
    """`svd weights pull svd` once against the fake Hub, which is stopped afterwards (tests then run offline)."""
    hf_home = tmp_path_factory.mktemp("pulled-hf")
    hub = FakeHub(repo_files(tiny_dir))
    try:
        proc = run_subprocess("weights", "pull", "svd", env=svd_env(hub.url, hf_home))
    finally:
        hub.stop()
    return proc, hub, hf_home


# --- a complete download --------------------------------------------------------------------------------


def test_pull_downloads_only_configs_and_fp16_safetensors(pulled, tiny_dir):
    """The pull succeeds, fetches each wanted file once and none of the multi-GB files svd does not use."""
    proc, hub, hf_home = pulled
    assert proc.returncode == 0, proc.stderr
    assert "svd is ready" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(hub.fetched("GET")) == sorted(WANTED)
    assert not UNWANTED & {r["file"] for r in hub.requests}
    api_calls = {r["file"] for r in hub.requests} - set(hub.files)  # no Xet token or other unexpected endpoint
    assert api_calls == {f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}/tree/{COMMIT}"}
    assert all(r["range"] is None for r in hub.requests)
    folder = snapshot(hf_home)
    for name in WANTED:
        assert (folder / name).read_bytes() == hub.files[name], name
    assert (folder / UNET).read_bytes() == (tiny_dir / "unet/diffusion_pytorch_model.safetensors").read_bytes()


def test_weights_list_and_path_find_the_download(pulled):
    """`svd weights list` reports svd as downloaded with its real size; `svd weights path` prints its folder."""
    _, hub, hf_home = pulled
    env = svd_env(hub.url, hf_home) | {"HF_HUB_OFFLINE": "1"}  # and the server is stopped
    listed = run_subprocess("weights", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["svd"]["downloaded"] is True
    assert rows["svd"]["size_bytes"] == sum(len(hub.files[name]) for name in WANTED) > 0
    assert rows["svd-xt"]["downloaded"] is False
    shown = run_subprocess("weights", "path", "svd", env=env)
    assert shown.returncode == 0, shown.stderr
    folder = Path(shown.stdout.strip())
    assert folder == snapshot(hf_home) == Path(rows["svd"]["path"])
    assert (folder / UNET).is_file()


def test_animate_uses_the_downloaded_weights_offline(pulled, tmp_path):
    """With the Hub gone, `svd animate --model svd` loads the pulled weights and records where they came from."""
    _, hub, hf_home = pulled
    out = tmp_path / "x.mp4"
    args = ["--model", "svd", "--frames", "2", "--steps", "1", "--size", "128x64", "--seed", "1", "--out", out]
    proc = run_subprocess("animate", EXAMPLES / "coffee.png", *args, env=svd_env(hub.url, hf_home))
    assert proc.returncode == 0, proc.stderr
    assert "Downloading" not in proc.stderr  # found on disk, not fetched (hf's own offline fallback would hide it)
    assert out.stat().st_size > 0
    model = json.loads(out.with_name("x.mp4.json").read_text())["model"]
    assert model["name"] == "svd" and model["repo"] == REPO and model["revision"] == "main"
    assert model["commit"] == COMMIT and model["variant"] == "fp16"
    assert model["path"] == str(snapshot(hf_home))


# --- interrupted downloads --------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_with_a_range_request(tiny_dir, tmp_path):
    """A transfer cut off after 12 MiB is resumed in the same run from its last saved chunk, not restarted."""
    files = with_big_unet(repo_files(tiny_dir))
    hub = FakeHub(files, cut_file=UNET)
    try:
        proc = run_subprocess("weights", "pull", "svd", env=svd_env(hub.url, tmp_path / "hf"))
    finally:
        hub.stop()
    assert proc.returncode == 0, proc.stderr
    unet_gets = [r["range"] for r in hub.requests if r["method"] == "GET" and r["file"] == UNET]
    assert unet_gets == [None, f"bytes={10 * 2**20}-"]  # cut at 12 MiB: the first 10 MiB chunk was kept
    assert (snapshot(tmp_path / "hf") / UNET).read_bytes() == files[UNET]


def test_pull_cut_off_by_network_loss_fails_in_one_line_and_pulling_again_completes(tiny_dir, tmp_path):
    """Losing the network mid-download ends in one clear error; a second pull fetches only what is missing.

    Observed with huggingface-hub 2.4: within one run a broken transfer is retried with a Range request (see the
    test above), but the partial file lives in a per-process temporary file that is deleted when the run fails.
    So a second `svd weights pull` keeps every file completed by the first run and downloads the interrupted
    file again from its first byte (no Range header), although 10 MiB of it had reached the disk. Across runs,
    downloads resume per file, not per byte.
    """
    files, env_home = with_big_unet(repo_files(tiny_dir)), tmp_path / "hf"
    hub = FakeHub(files, cut_file=UNET, vanish_after_cut=True)
    try:
        first = run_subprocess("weights", "pull", "svd", env=svd_env(hub.url, env_home))
    finally:
        hub.stop()
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("svd: error:")]
    assert len(errors) == 1 and first.stderr.strip().splitlines()[-1] == errors[0]
    assert errors[0].startswith("svd: error: Cannot reach the Hugging Face Hub to download svd")
    assert "`svd weights pull svd`" in errors[0]
    assert sorted(set(hub.fetched("GET"))) == sorted(WANTED)  # everything but the unet arrived
    blobs = env_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    assert not list(blobs.glob("*.incomplete")), "huggingface-hub now keeps partial files: test a real resume"

    listed = run_subprocess("weights", "list", "--json", env=svd_env(hub.url, env_home))
    assert {row["name"]: row["downloaded"] for row in json.loads(listed.stdout)}["svd"] is False

    again = FakeHub(files)
    try:
        second = run_subprocess("weights", "pull", "svd", env=svd_env(again.url, env_home))
    finally:
        again.stop()
    assert second.returncode == 0, second.stderr
    assert again.fetched("GET") == [UNET]
    assert [r["range"] for r in again.requests if r["method"] == "GET" and r["file"] == UNET] == [None]
    assert (snapshot(env_home) / UNET).read_bytes() == files[UNET]


# --- repair ------------------------------------------------------------------------------------------------


def test_a_damaged_download_is_named_verified_and_repaired_by_pull(pulled, tmp_path):
    """A truncated blob in the HF cache: animate names it and says pull; verify agrees; pull fetches only it."""
    _, hub, hf_home = pulled
    blob = (snapshot(hf_home) / UNET).resolve()
    blob.write_bytes(hub.files[UNET][: len(hub.files[UNET]) // 2])
    env = svd_env(hub.url, hf_home)  # the pulled fixture's hub is stopped: offline

    proc = run_subprocess("animate", EXAMPLES / "coffee.png", "--model", "svd", "--out", tmp_path / "x.mp4", env=env)
    assert proc.returncode == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"svd: error: {snapshot(hf_home) / UNET} is truncated (")
    assert "run `svd weights pull svd` to check every file and download the damaged ones again" in error

    verify = run_subprocess("weights", "verify", "svd", env=env)
    assert verify.returncode == 1 and f"{snapshot(hf_home) / UNET} is truncated" in verify.stderr

    again = FakeHub(hub.files)
    try:
        pull = run_subprocess("weights", "pull", "svd", env=svd_env(again.url, hf_home))
    finally:
        again.stop()
    assert pull.returncode == 0, pull.stderr
    assert f"{snapshot(hf_home) / UNET} is truncated" in pull.stderr and "downloading it again" in pull.stderr
    assert again.fetched("GET") == [UNET]
    assert (snapshot(hf_home) / UNET).read_bytes() == hub.files[UNET]
    assert run_subprocess("weights", "verify", "svd", env=env).returncode == 0


def test_a_later_download_resolving_to_another_commit_says_so(pulled, tmp_path):
    """`main` moved on the Hub since the first pull: a fresh download says so in one line and records the new commit
    (the fixture's pull recorded the first one, without a word)."""
    first, hub, _ = pulled
    lock = Path(os.environ["SVD_HOME"]) / "downloads.lock.json"
    assert json.loads(lock.read_text())[f"{REPO}@main"]["commit"] == COMMIT
    assert "the repository changed" not in first.stderr
    moved = FakeHub(hub.files, commit=MOVED)
    try:
        pull = run_subprocess("weights", "pull", "svd", env=svd_env(moved.url, tmp_path / "hf"))
    finally:
        moved.stop()
    assert pull.returncode == 0, pull.stderr
    note = f"svd: {REPO} at revision main is now commit {MOVED[:12]}, where svd's last download of it was {COMMIT[:12]}"
    assert note in pull.stderr.replace("\n", " ") and pull.stderr.count("the repository changed") == 1, pull.stderr
    assert json.loads(lock.read_text())[f"{REPO}@main"]["commit"] == MOVED
