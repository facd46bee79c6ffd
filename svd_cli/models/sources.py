"""Turning what the user names as a model into a folder on this machine, and knowing its defaults.

A model is a name from weights.toml (downloaded into the Hugging Face cache, or built locally for `tiny`),
a local folder in diffusers layout, or a Hub repo id. `resolve_model` finds or fetches it; `peek_defaults`
tells the defaults without downloading anything, so a batch is planned before any weights move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailableError, UsageError, ref
from ..progress import NullProgress, Progress
from ..registry import ModelEntry, get_entry, load_registry, model_names
from .kinds import KIND_DEFAULTS, folder_defaults
from .layout import check_model_folder, detect_variant

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to a folder on this machine, and where it came from (recorded in every sidecar)."""

    name: str
    path: Path
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    variant: str | None = None
    entry: ModelEntry | None = None
    kind: str = "svd"

    def describe(self) -> dict:
        return {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "variant": self.variant,
            "path": str(self.path),
        }

    @property
    def sampler(self) -> str:
        return self.entry.sampler if self.entry else KIND_DEFAULTS[self.kind]["sampler"]

    def defaults(self) -> dict:
        """The default of every setting the model decides (registry entry, else the folder's own configs)."""
        return dict(self.entry.defaults) if self.entry else folder_defaults(self.path, self.kind)


def resolve_model(spec: str, *, download: bool = True, progress: Progress | None = None) -> ModelSource:
    """Turn a model name, folder or repo id into a local folder, downloading (with progress) when needed."""
    progress = progress or NullProgress()
    entry = get_entry(spec)
    if entry is not None:
        if entry.builtin == "tiny":
            from .tiny import ensure_tiny_model, tiny_model_dir

            if not (tiny_model_dir() / "model_index.json").is_file():
                progress.note("Building the built-in tiny model (first use only)")
            return ModelSource(name=entry.name, path=ensure_tiny_model(), entry=entry, kind=entry.kind)
        return _resolve_repo(entry.name, entry.repo, entry.revision, entry.variant, entry, download, progress)

    path = Path(spec).expanduser()
    if path.is_dir():
        variant = detect_variant(path)
        check_model_folder(path, variant)
        return ModelSource(name=path.name, path=path.resolve(), variant=variant)
    if _looks_like_path(spec) or not _REPO_ID.match(spec):
        raise UsageError(
            f"{ref('model')} {spec}: not a model name ({', '.join(model_names())}), an existing folder or a Hub "
            "repo id like stabilityai/stable-video-diffusion-img2vid-xt.",
            option="model",
            value=spec,
        )
    return _resolve_repo(spec, spec, "main", None, None, download, progress)


def peek_defaults(spec: str) -> dict | None:
    """The model's defaults if they can be known without the network (registry, folder, cache), else None."""
    entry = get_entry(spec)
    if entry is not None:
        return dict(entry.defaults)
    path = Path(spec).expanduser()
    if path.is_dir():
        return folder_defaults(path)
    if _REPO_ID.match(spec):
        from .hub import cached_snapshot

        folder = cached_snapshot(spec, "main", None) or cached_snapshot(spec, "main", "fp16")
        return folder_defaults(folder) if folder else None
    return None


def on_disk(spec: str) -> bool:
    """Whether using `spec` needs no download (built in, a folder, or already in the cache). No network."""
    entry = get_entry(spec)
    if entry is not None:
        return entry.builtin is not None or local_snapshot(entry) is not None
    if Path(spec).expanduser().exists() or _looks_like_path(spec) or not _REPO_ID.match(spec):
        return True  # a folder, or not a repo id at all: resolving it says what is wrong, nothing downloads
    from .hub import cached_snapshot

    return cached_snapshot(spec, "main", None) is not None or cached_snapshot(spec, "main", "fp16") is not None


def missing_folder(spec: str) -> bool:
    """Whether `spec` names a model folder (a path, not a name or repo id) that does not exist."""
    looks_like_folder = _looks_like_path(spec) or (not _REPO_ID.match(spec) and ("/" in spec or "\\" in spec))
    return get_entry(spec) is None and looks_like_folder and not Path(spec).expanduser().exists()


def download_size(spec: str) -> float:
    """Gigabytes a download of `spec` takes, if the registry knows; else 0."""
    entry = get_entry(spec)
    return entry.download_gb if entry is not None else 0.0


def local_snapshot(entry: ModelEntry) -> Path | None:
    """The complete local copy of a registry model, or None; never touches the network."""
    if entry.builtin == "tiny":
        from .tiny import tiny_model_dir

        folder = tiny_model_dir()
        return folder if (folder / "model_index.json").is_file() else None
    from .hub import cached_snapshot

    return cached_snapshot(entry.repo, entry.revision, entry.variant)


def weights_status() -> list[dict]:
    """Every registry model: what it is and whether (and where) its weights are on disk. No network."""
    rows = []
    for entry in load_registry().values():
        folder = local_snapshot(entry)
        rows.append(
            {
                "name": entry.name,
                "frames": entry.frames,
                "repo": entry.repo or "built-in",
                "downloaded": folder is not None,
                "size_bytes": disk_size(folder) if folder else None,
                "download_gb": entry.download_gb,
                "gated": entry.gated,
                "path": str(folder) if folder else None,
            }
        )
    return rows


def disk_size(folder: Path) -> int:
    """Bytes the model's files take (following the Hub cache's symlinks to their blobs)."""
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def _resolve_repo(
    name: str,
    repo: str,
    revision: str,
    variant: str | None,
    entry: ModelEntry | None,
    download: bool,
    progress: Progress,
) -> ModelSource:
    from .hub import cached_snapshot, download_snapshot

    folder = cached_snapshot(repo, revision, variant)
    if folder is None and entry is None and variant is None:
        folder = cached_snapshot(repo, revision, "fp16")
        variant = "fp16" if folder is not None else None
    if folder is None:
        if not download:
            raise ModelUnavailableError(f"{name} is not downloaded yet: run `svd weights pull {name}`.", model=name)
        folder, variant = download_snapshot(
            name, repo, revision, variant,
            gated=bool(entry and entry.gated), download_gb=entry.download_gb if entry else 0.0, progress=progress,
        )  # fmt: skip
    check_model_folder(folder, variant)
    return ModelSource(
        name=name,
        path=folder,
        repo=repo,
        revision=revision,
        commit=folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None,
        variant=variant,
        entry=entry,
        kind=entry.kind if entry else "svd",
    )
