"""Turning what the user names as a model into a folder on this machine, and knowing its defaults.

A model is a name from weights.toml (downloaded into the Hugging Face cache, or built locally for `tiny`),
a local folder in diffusers layout, a single safetensors file in Stability's layout (`svd_xt.safetensors`, see
single_file.py), or a Hub repo id. `resolve_model` finds or fetches it; `peek_defaults`
tells the defaults without downloading anything, so a batch is planned before any weights move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ModelUnavailableError, UsageError, ref
from ..progress import NullProgress, Progress
from ..registry import ModelEntry, get_entry, load_registry, model_names
from .kinds import folder_defaults, kind_defaults
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
    single_file: dict | None = None  # a single-file checkpoint: {"path", "size", "sha256"} (and its "arch")
    unet: Path | None = None  # a UNet file that replaces the model's (a registry entry's, e.g. AnimateLCM's)

    def describe(self) -> dict:
        data = {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "variant": self.variant,
            "path": str(self.single_file["path"] if self.single_file else self.path),
        }
        if self.single_file:
            data["single_file"] = dict(self.single_file)
        return data

    @property
    def is_file(self) -> bool:
        """The weights are read from a single file in Stability's layout, converted while loading."""
        return self.path.is_file()

    @property
    def sampler(self) -> str:
        return self.defaults()["sampler"]

    def defaults(self) -> dict:
        """The default of every setting the model decides (registry entry, else the folder's own configs)."""
        if self.entry:
            return dict(self.entry.defaults)
        if self.is_file:
            return file_defaults(self.path)
        return folder_defaults(self.path, self.kind)


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
        if entry.file:  # Stability's single file instead of the diffusers folders
            path = _entry_file(entry, entry.repo, entry.file, download, progress)
            return replace(resolve_single_file(path, progress), name=entry.name, entry=entry, repo=entry.repo,
                           revision=entry.revision)  # fmt: skip
        source = _resolve_repo(entry.name, entry.repo, entry.revision, entry.variant, entry, download, progress)
        if entry.unet_repo:  # a UNet that replaces the repo's (AnimateLCM's)
            source = replace(source, unet=_entry_file(entry, entry.unet_repo, entry.unet_file, download, progress))
        return source

    path = Path(spec).expanduser()
    if path.is_dir():
        variant = detect_variant(path)
        check_model_folder(path, variant)
        return ModelSource(name=path.name, path=path.resolve(), variant=variant)
    if path.is_file():
        return resolve_single_file(path, progress)
    imported = imported_model(spec)
    if imported is not None:
        return imported
    if _looks_like_path(spec) or not _REPO_ID.match(spec):
        raise UsageError(
            f"{ref('model')} {spec}: not a model name ({', '.join(model_names())}), an existing folder or "
            "safetensors file, or a Hub repo id like stabilityai/stable-video-diffusion-img2vid-xt.",
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
    if path.is_file():
        return file_defaults(path)
    imported = imported_model(spec)
    if imported is not None:
        return imported.defaults()
    if _REPO_ID.match(spec):
        from .hub import cached_snapshot

        folder = cached_snapshot(spec, "main", None) or cached_snapshot(spec, "main", "fp16")
        return folder_defaults(folder) if folder else None
    return None


def local_snapshot(entry: ModelEntry) -> Path | None:
    """The complete local copy of a registry model, or None; never touches the network."""
    if entry.builtin == "tiny":
        from .tiny import tiny_model_dir

        folder = tiny_model_dir()
        return folder if (folder / "model_index.json").is_file() else None
    from .hub import cached_file, cached_snapshot

    if entry.file:
        path = cached_file(entry.repo, "main", entry.file)
        return path.parent if path else None
    folder = cached_snapshot(entry.repo, entry.revision, entry.variant)
    if folder is not None and entry.unet_repo and cached_file(entry.unet_repo, "main", entry.unet_file) is None:
        return None
    return folder


def weights_status() -> list[dict]:
    """Every registry model: what it is and whether (and where) its weights are on disk; then the single files
    svd was pointed at and the models imported from them. No network."""
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
    from .files import seen_files

    local = dict(downloaded=True, download_gb=0.0, gated=False)
    for row in imported_models():
        folder = Path(row["path"])
        frames = folder_defaults(folder)["frames"]
        rows.append({"name": row["name"], "frames": frames, "repo": "imported", "size_bytes": disk_size(folder),
                     "path": str(folder), "source": row["source"], **local})  # fmt: skip
    for row in seen_files():
        if "model" in row["roles"]:
            path = Path(row["path"])
            rows.append({"name": path.stem, "frames": _file_frames(path), "repo": "single file",
                         "size_bytes": row["size"], "path": row["path"], "sha256": row["sha256"], **local})  # fmt: skip
    return rows


def _file_frames(path: Path) -> int:
    from .single_file import frames_for

    return frames_for(path)


def file_defaults(path: Path) -> dict:
    """Defaults of a single-file checkpoint (checked from its header, no weights read): 25 frames for XT files."""
    from .single_file import check_svd_file, frames_for, read_header

    check_svd_file(read_header(path))
    defaults = kind_defaults("svd")
    defaults["frames"] = frames_for(path)
    return defaults


def resolve_single_file(path: Path, progress: Progress) -> ModelSource:
    """A single-file checkpoint: its header checked, its architecture known, its identity recorded.

    If `svd weights import` saved this very file (same SHA-256) in diffusers layout, that copy is loaded.
    """
    from .files import file_identity
    from .single_file import check_svd_file, match_architecture, read_header

    header = read_header(path)
    check_svd_file(header)
    identity = file_identity(path, "model", progress) | {"arch": match_architecture(header)}
    folder = imported_folder(identity["sha256"])
    if folder is not None:
        progress.note(f"Using the imported copy of {path.name} ({folder})")
        return ModelSource(name=path.stem, path=folder, variant=detect_variant(folder), single_file=identity)
    return ModelSource(name=path.stem, path=path.resolve(), single_file=identity)


# --- imported single files: diffusers layout in svd's cache ---------------------------------------------------


def imports_dir() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "imported"


def imported_models() -> list[dict]:
    """Every `svd weights import`ed model: its name, folder and the file it came from."""
    import json

    rows = []
    root = imports_dir()
    for marker in sorted(root.glob("*/svd_import.json")) if root.is_dir() else []:
        try:
            origin = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows.append({"name": marker.parent.name, "path": str(marker.parent), "source": origin})
    return rows


def imported_folder(sha256: str) -> Path | None:
    for row in imported_models():
        if row["source"].get("sha256") == sha256 and (Path(row["path"]) / "model_index.json").is_file():
            return Path(row["path"])
    return None


def imported_model(name: str) -> ModelSource | None:
    """An imported model by its name (`svd weights import` prints it), or None."""
    for row in imported_models():
        if row["name"] == name:
            folder = Path(row["path"])
            return ModelSource(name=name, path=folder, variant=detect_variant(folder), single_file=row["source"])
    return None


def import_single_file(path: Path, name: str | None = None, progress: Progress | None = None) -> Path:
    """Convert a single-file checkpoint once and save it in diffusers layout (fp16) in svd's cache."""
    import json
    import os
    import shutil
    import tempfile

    import torch

    from .quiet import quiet_transformers
    from .single_file import load_single_file

    progress = progress or NullProgress()
    source = resolve_single_file(Path(path), progress)
    target = imports_dir() / (name or Path(path).stem)
    if source.path.is_dir():
        return source.path  # already imported
    target.parent.mkdir(parents=True, exist_ok=True)
    progress.note(f"Converting {Path(path).name} to diffusers layout (fp16)")
    pipe = load_single_file(source.path, source.single_file["arch"], torch.float16)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
    try:
        with quiet_transformers():
            pipe.save_pretrained(staging, safe_serialization=True, variant="fp16")
        unet_config = staging / "unet" / "config.json"
        config = json.loads(unet_config.read_text(encoding="utf-8"))
        config["num_frames"] = file_defaults(source.path)["frames"]
        unet_config.write_text(json.dumps(config, indent=2), encoding="utf-8")
        (staging / "svd_import.json").write_text(json.dumps(source.single_file, indent=2), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


def _entry_file(entry: ModelEntry, repo: str, filename: str, download: bool, progress: Progress) -> Path:
    from .hub import cached_file, download_file

    path = cached_file(repo, "main", filename)
    if path is None:
        if not download:
            raise ModelUnavailableError(
                f"{entry.name} is not downloaded yet: run `svd weights pull {entry.name}`.", model=entry.name
            )
        path = download_file(entry.name, repo, "main", filename, gated=entry.gated, download_gb=entry.download_gb,
                             progress=progress)  # fmt: skip
    return path


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
