"""Fetching model weights from the Hugging Face Hub: the only module that talks to the network.

It downloads only the files the pipeline needs (configs and one safetensors file per component, fp16 where
the repo has it) into the Hugging Face cache, and turns every way that can fail into one
`ModelUnavailableError` whose message names the command that fixes it. A file published only elsewhere (rembg's
u2net.onnx, a GitHub release file) is downloaded from its address by huggingface-hub's own HTTP client, checked
against its publisher's MD5 and kept in svd's cache folder under that MD5, with the same one-sentence failures.

A revision such as `main` moves when its repository changes. Every download records the commit it resolved to
in svd's cache folder (`downloads.lock.json`, one entry per repo and revision); a later download that resolves
to another commit says so in one line. The recipe of every video records the commit that made it.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ..errors import ModelUnavailableError, SvdError, ref
from ..io.bounded import BoundedReadError, load_json, read_text
from ..io.video import write_json
from ..kinds import FILE_KINDS, KINDS, builtin_model
from ..paths import cache_dir
from ..progress import Progress, size_text
from .files import file_digest
from .layout import allow_patterns, candidate_components, is_complete, weight_components, weight_name


def offline_mode() -> bool:
    """HF_HUB_OFFLINE as huggingface-hub reads it: 1/ON/YES/TRUE mean offline, anything else online."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in {"1", "ON", "YES", "TRUE"}


def cached_snapshot(repo: str, revision: str, variant: str | None, kind: str, family: str | None = None) -> Path | None:
    """The complete local copy of a repo's pipeline files, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    patterns = allow_patterns(variant, kind, family)
    try:
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:
        return None
    return folder if is_complete(folder, variant, kind, family) else None


def forget_cached_file(path: Path) -> None:
    """Delete one file of a cached snapshot (its blob too), so the next download fetches it again."""
    blob = path.resolve()
    for p in {blob, path}:
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


def download_snapshot(
    name: str,
    repo: str,
    revision: str,
    variant: str | None,
    *,
    gated: bool,
    download_gb: float,
    progress: Progress,
    kind: str,
    family: str | None = None,
) -> tuple[Path, str | None]:
    """Fetch the pipeline's files (keeping any already in the cache); map every Hub failure to one sentence."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    fix = f"`svd weights pull {name}`"
    instead = f"{ref(KINDS[kind]['option'])} {builtin_model(kind)}"
    if offline_mode():
        raise ModelUnavailableError(
            f"{name} is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE "
            f"and run {fix} while online, or use {instead} or a local folder.",
            model=name,
        )
    try:
        if variant is None:
            variant = _remote_variant(repo, revision, kind, family)
        size = f" (about {size_text(download_gb * 1e9)})" if download_gb else ""
        progress.note(f"Downloading {name}{size} from the Hugging Face Hub ({repo}, revision {revision})")
        if progress.interactive:
            enable_progress_bars()
        else:
            disable_progress_bars()
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=allow_patterns(variant, kind, family)))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # every Hub failure becomes one sentence with its fix
        why = _explain_hub_error(exc, name, repo, revision, gated, fix, instead, kind)
        raise ModelUnavailableError(why, model=name) from exc
    if not is_complete(folder, variant, kind, family):
        components = weight_components(folder, kind, family)
        weights = [weight_name(component, stem, variant) for component, stem in components.items()]
        raise ModelUnavailableError(
            f"{repo} at revision {revision} lacks the safetensors weights svd needs "
            f"({', '.join(weights)}); svd never loads pickle files.",
            model=name,
        )
    remember_commit(name, repo, revision, folder, progress)
    return folder, variant


def cached_file(repo: str, revision: str, filename: str) -> Path | None:
    """One file of a repo if it is in the local cache; never touches the network."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True))
    except Exception:
        return None


def download_file(
    name: str,
    repo: str,
    revision: str,
    filename: str,
    *,
    gated: bool,
    download_gb: float,
    progress: Progress,
    kind: str,
) -> Path:
    """Fetch one safetensors file of a repo (a single-file checkpoint, a replacement UNet, an upscaler), with the
    same one-sentence failures as a whole pipeline."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    fix = f"`svd weights pull {name}`"
    instead = f"{ref(KINDS[kind]['option'])} {builtin_model(kind)}"
    if offline_mode():
        raise ModelUnavailableError(
            f"{name} needs {repo}/{filename}, which is not downloaded, and HF_HUB_OFFLINE=1 forbids downloading "
            f"it: unset HF_HUB_OFFLINE and run {fix} while online, or use {instead}.",
            model=name,
        )
    try:
        size = f" (about {size_text(download_gb * 1e9)})" if download_gb else ""
        progress.note(f"Downloading {filename}{size} from the Hugging Face Hub ({repo}, revision {revision})")
        (enable_progress_bars if progress.interactive else disable_progress_bars)()
        path = Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as exc:  # every Hub failure becomes one sentence with its fix
        from huggingface_hub import errors as hf_errors

        if isinstance(exc, hf_errors.EntryNotFoundError) and _status(exc) == 404:
            why = (
                f"{repo} at revision {revision} has no file {filename} (the Hub answered 404): the registry entry "
                f"{name} in weights.toml is out of date; update svd, or use {instead}."
            )
        else:
            why = _explain_hub_error(exc, name, repo, revision, gated, fix, instead, kind)
        raise ModelUnavailableError(why, model=name) from exc
    remember_commit(name, repo, revision, path, progress)
    return path


def url_file_path(md5: str, filename: str) -> Path:
    """Where a file downloaded from an address is kept: under its MD5, so another version never takes its place."""
    return cache_dir() / "downloads" / md5 / filename


def cached_url_file(md5: str, filename: str) -> Path | None:
    """A file downloaded from an address before (checked against `md5` then), if it is still there."""
    path = url_file_path(md5, filename)
    return path if path.is_file() else None


def download_url(
    name: str, url: str, md5: str, filename: str, *, download_gb: float, progress: Progress, kind: str
) -> Path:
    """Fetch one file from `url` with progress, keep it only if its MD5 is `md5`; every failure is one sentence."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    fix = f"`svd weights pull {name}`"
    instead = f"{ref(KINDS[kind]['option'])} {builtin_model(kind)}"
    if offline_mode():
        raise ModelUnavailableError(
            f"{name} ({filename}) is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it: unset "
            f"HF_HUB_OFFLINE and run {fix} while online, or use {instead}.",
            model=name,
        )
    target = url_file_path(md5, filename)
    partial = target.with_name(f".{filename}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        size = f" (about {size_text(download_gb * 1e9)})" if download_gb else ""
        progress.note(f"Downloading {filename}{size} from {url}")
        (enable_progress_bars if progress.interactive else disable_progress_bars)()
        with partial.open("wb") as out:
            http_get(url, out, displayed_filename=filename)
        if (found := file_digest(partial, "md5")) != md5:
            raise ModelUnavailableError(
                f"The file downloaded from {url} is not the {name} svd expects (its MD5 is {found}, not {md5}): "
                f"run {fix} again later, or use {instead}.",
                model=name,
            )
        os.replace(partial, target)  # only a whole, checked file takes the final name
    except ModelUnavailableError:
        raise
    except Exception as exc:  # every network or disk failure becomes one sentence with its fix
        if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
            why = f"The disk filled up while downloading {name}: free some space, then run {fix}."
        elif _status(exc) == 404:
            why = (f"{url} answered 404 (no such file): the registry entry {name} in weights.toml is out of date; "
                   f"update svd, or use {instead}.")  # fmt: skip
        else:
            why = (f"Cannot download {name} from {url}: connect to the internet and run {fix}, or use {instead} or "
                   f"{KINDS[kind]['places']}.")  # fmt: skip
        raise ModelUnavailableError(why, model=name) from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


COMMIT = re.compile(r"[0-9a-f]{40}")
LOCK_FILE = "downloads.lock.json"


def snapshot_commit(path: Path) -> str | None:
    """The commit a folder or file of huggingface-hub's cache belongs to (it lives under snapshots/COMMIT/)."""
    parts = path.parts
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "snapshots":
            return parts[index + 1] if COMMIT.fullmatch(parts[index + 1]) else None
    return None


def remember_commit(name: str, repo: str, revision: str, path: Path, progress: Progress) -> None:
    """Record the commit `revision` of `repo` resolved to in this download; say so when the last download of it
    resolved to another (the repository changed: the same seed may make other videos). A commit revision cannot
    move and is not recorded."""
    commit = snapshot_commit(path)
    if commit is None or COMMIT.fullmatch(revision):
        return
    lock = cache_dir() / LOCK_FILE
    try:
        entries = load_json(read_text(lock))
    except (OSError, ValueError, BoundedReadError):  # none yet, or unreadable: start again
        entries = {}
    entries = entries if isinstance(entries, dict) else {}
    key = f"{repo}@{revision}"
    before = entries.get(key, {}).get("commit") if isinstance(entries.get(key), dict) else None
    if before and before != commit:
        progress.note(
            f"{name}: {repo} at revision {revision} is now commit {commit[:12]}, where svd's last download of it "
            f"was {before[:12]}: the repository changed, so a seed may not make the video it made before (each "
            "recipe records its commit)."
        )
    entries[key] = {"commit": commit, "name": name}
    with contextlib.suppress(SvdError):  # a read-only cache folder: the download itself is fine
        write_json(entries, lock)


def _remote_variant(repo: str, revision: str, kind: str, family: str | None) -> str | None:
    """'fp16' when the repo has an fp16 safetensors file of every component (of any table the model may have)."""
    import fnmatch

    from huggingface_hub import HfApi

    # One request (the repo's info lists its files); the tree listing would retry for 25 s with no network.
    files = [s.rfilename for s in HfApi().model_info(repo, revision=revision).siblings or []]
    for components in candidate_components(kind, family):
        wanted = [weight_name(folder, stem, "fp16") for folder, stem in components.items()]
        if all(fnmatch.filter(files, pattern) for pattern in wanted):
            return "fp16"
    return None


def _explain_hub_error(
    exc: Exception, name: str, repo: str, revision: str, gated: bool, fix: str, instead: str, kind: str
) -> str:
    from huggingface_hub import errors as hf_errors

    option = KINDS[kind]["option"]
    local = "a .safetensors file" if kind in FILE_KINDS else "a local folder"
    url = f"https://huggingface.co/{repo}"
    if isinstance(exc, hf_errors.GatedRepoError) or (gated and _status(exc) in (401, 403)):
        return (
            f"{name} ({repo}) is gated: accept its licence at {url} while logged in, then log in here with "
            f"`hf auth login` (or set HF_TOKEN to an access token) and run {fix}."
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return f"{repo} has no revision {revision!r}: fix the revision in weights.toml or {ref(option)}."
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return (
            f"{repo} was not found on the Hub (or it is private and you are not logged in): check "
            f"{ref(option)}, or log in with `hf auth login`."
        )
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return (
            f"The disk filled up while downloading {name}: free some space or point HF_HOME at a larger "
            f"disk, then run {fix} (files already downloaded are kept)."
        )
    return (
        f"Cannot reach the Hugging Face Hub to download {name}: connect to the internet and run {fix} "
        f"(files already downloaded are kept), or use {instead} or {local}."
    )


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)
