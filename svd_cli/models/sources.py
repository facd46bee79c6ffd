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
from ..kinds import FILE_KINDS, KINDS, VIDEO, folder_defaults, folder_type, model_defaults, weights_suffix
from ..paths import cache_dir
from ..progress import NullProgress, Progress
from ..registry import ModelEntry, get_entry, load_registry, model_names
from .files import file_identity, seen_files
from .hub import (
    cached_file,
    cached_snapshot,
    cached_url_file,
    download_file,
    download_snapshot,
    download_url,
    forget_cached_file,
    snapshot_commit,
)
from .layout import (
    check_model_folder,
    damaged_files,
    detect_variant,
    hash_problem,
    md5_problem,
    weights_file_problem,
)
from .post import check_weights_file
from .quiet import quiet_transformers
from .single_file import (
    check_svd_file,
    file_family,
    frames_for,
    load_single_file,
    match_architecture,
    read_header,
)
from .tiny import ensure_tiny_file, ensure_tiny_model, tiny_file, tiny_model_dir

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to a folder on this machine, and where it came from (recorded in every sidecar)."""

    name: str
    path: Path
    kind: str  # what it is for (kinds.py: VIDEO, text-to-image, upscaler, ...)
    family: str | None = None  # a video model's family (families/); None for the other kinds
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    variant: str | None = None
    entry: ModelEntry | None = None
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
        return self.defaults().get("sampler") or KINDS[self.kind]["sampler"]

    def defaults(self) -> dict:
        """The default of every setting the model decides (registry entry, else the folder's own configs)."""
        if self.entry:
            return dict(self.entry.defaults)
        if self.is_file and self.kind == VIDEO:  # a single-file checkpoint: its header decides
            return file_defaults(self.path)
        return folder_defaults(self.path, self.kind, self.family)

    def repair_advice(self) -> str:
        """How to fix a damaged file of this model: depends on where it came from."""
        return repair_advice(self.name, self.entry, downloaded=self.repo is not None)


EXAMPLE_REPOS = {VIDEO: "stabilityai/stable-video-diffusion-img2vid-xt", "text-to-image": "stabilityai/sdxl-turbo"}


def repair_advice(name: str, entry: ModelEntry | None, downloaded: bool) -> str:
    if entry is not None and entry.builtin:
        return f"svd rebuilds the built-in {name} model: run `svd weights pull {name}`"
    if downloaded:
        return f"run `svd weights pull {name}` to check every file and download the damaged ones again"
    return (
        "this is a local folder, so svd cannot download it: replace the file with a complete copy (for example "
        "by saving the pipeline again with save_pretrained)"
    )


def resolve_model(
    spec: str,
    *,
    kind: str | None = None,
    download: bool = True,
    progress: Progress | None = None,
    repair: bool = False,
) -> ModelSource:
    """Turn a model name, folder or repo id into a local folder, downloading (with progress) when needed.

    `kind` is the kind the caller needs (VIDEO, any family's, for `model`; "text-to-image" for `image_model`); a
    model of another kind is a usage error. None takes any kind (`svd weights pull`). `repair` (svd weights pull)
    checks every weights file of a downloaded model, hashes included, and downloads damaged ones again. The
    built-in models are always checked and rebuilt if damaged.
    """
    progress = progress or NullProgress()
    entry = get_entry(spec)
    if kind in FILE_KINDS or (kind is None and entry is not None and entry.kind in FILE_KINDS):
        return resolve_file_model(spec, kind or entry.kind, download=download, progress=progress, repair=repair)
    entry = check_kind(spec, kind)
    if entry is not None:
        if entry.builtin:
            folder = tiny_model_dir(entry.builtin)
            if not (folder / "model_index.json").is_file():
                progress.note(f"Building the built-in {entry.name} model (first use only)")
            elif damaged := damaged_files(folder, None, entry.kind, entry.family):
                path, problem = damaged[0]
                progress.note(f"The built-in {entry.name} model is damaged ({path} {problem}); rebuilding it")
            return ModelSource(name=entry.name, path=ensure_tiny_model(entry.builtin), entry=entry, kind=entry.kind,
                               family=entry.family)  # fmt: skip
        if entry.file:  # Stability's single file instead of the diffusers folders
            path = _entry_file(entry, entry.repo, entry.file, download, progress, entry.revision)
            return replace(resolve_single_file(path, progress), name=entry.name, entry=entry, repo=entry.repo,
                           revision=entry.revision)  # fmt: skip
        source = _resolve_repo(
            entry.name, entry.repo, entry.revision, entry.variant, entry, download, progress, entry.kind, repair
        )
        if entry.unet_repo:  # a UNet that replaces the repo's (AnimateLCM's)
            source = replace(source, unet=_entry_file(entry, entry.unet_repo, entry.unet_file, download, progress))
        return source

    kind = kind or VIDEO
    path = Path(spec).expanduser()
    if path.is_dir():
        kind, family = folder_type(path) or (kind, None)
        variant = detect_variant(path, kind, family)
        check_model_folder(path, variant, kind, family)
        return ModelSource(name=path.name, path=path.resolve(), kind=kind, family=family, variant=variant)
    if path.is_file():
        return resolve_single_file(path, progress)
    imported = imported_model(spec)
    if imported is not None:
        return imported
    return _resolve_repo(spec, spec, "main", None, None, download, progress, kind, repair)


def resolve_file_model(
    spec: str, kind: str, *, download: bool = True, progress: Progress | None = None, repair: bool = False
) -> ModelSource:
    """A one-file model (an upscaler, an interpolator, a background remover) by registry name (downloaded with
    progress, or the built-in one built once) or as a file (.safetensors; .onnx for a background remover): a
    source of `kind` whose `path` is the file and `single_file` its identity. `repair` (svd weights pull) downloads
    a damaged cached file again."""

    progress = progress or NullProgress()
    entry = check_kind(spec, kind) if get_entry(spec) is not None else None
    if entry is not None and entry.builtin:
        path = tiny_file(entry.builtin)
        if not path.is_file():
            progress.note(f"Building the built-in {entry.name} model (first use only)")
        elif problem := weights_file_problem(path):
            progress.note(f"The built-in {entry.name} model is damaged ({path} {problem}); rebuilding it")
        path = ensure_tiny_file(entry.builtin)
    elif entry is not None:  # downloaded: from the Hub, or from its publisher's address (kept under its MD5)
        cached = _cached_entry_file(entry, entry.repo, entry.file, entry.revision)
        if repair and cached is not None and (problem := _downloaded_file_problem(entry, cached)):
            progress.note(f"{cached} {problem}; downloading it again")
            forget_cached_file(cached)
        path = _entry_file(entry, entry.repo, entry.file, download, progress, entry.revision)
    else:
        path = Path(spec).expanduser()
        suffix = weights_suffix(kind)
        if not path.exists() and not _looks_like_path(spec) and path.suffix.lower() != suffix:
            option, role = KINDS[kind]["option"], KINDS[kind]["role"]
            names = ", ".join(_names_of(kind))
            raise UsageError(
                f"{ref(option)} {spec}: not {role} name ({names}) nor an existing {suffix} file.",
                option=option,
                value=spec,
            )
        check_weights_file(path, kind)
        path = path.resolve()
    identity = file_identity(path, kind, progress)
    return ModelSource(
        name=entry.name if entry else path.stem,
        path=Path(path),
        repo=entry.repo if entry else None,
        revision=entry.revision if entry and entry.repo else None,
        entry=entry,
        kind=kind,
        single_file=identity,
    )


def _names_of(kind: str) -> list[str]:
    """What a setting taking a model of `kind` accepts by name: its built-in methods, then the registry's models."""
    return [*KINDS[kind].get("methods", ()), *(n for n in model_names() if get_entry(n).kind == kind)]


def check_kind(spec: str, kind: str | None) -> ModelEntry | None:
    """The registry entry `spec` names (None for a folder or repo id); a usage error if it cannot be a `kind`.

    Needs no network: a name of the wrong kind, a folder holding the wrong kind of pipeline, or something that
    is neither a name, a folder nor a repo id are refused before any work.
    """
    entry = get_entry(spec)
    path = Path(spec).expanduser()
    found = entry.kind if entry is not None else (_folder_kind(path) if path.is_dir() else None)
    if kind is not None and found is not None:
        check_found(spec, found, kind)
    if (
        entry is None
        and not path.exists()
        and imported_model(spec) is None
        and (_looks_like_path(spec) or not _REPO_ID.match(spec))
    ):
        option = KINDS[kind or VIDEO]["option"]
        names = ", ".join(n for n in model_names() if kind is None or get_entry(n).kind == kind)
        video = kind in (None, VIDEO)
        places = "an existing folder or safetensors file, or" if video else "an existing folder or"
        raise UsageError(
            f"{ref(option)} {spec}: not a model name ({names}), {places} a Hub repo id like "
            f"{EXAMPLE_REPOS[VIDEO if video else kind]}.",
            option=option,
            value=spec,
        )
    return entry


def check_found(spec: str, found: str, kind: str) -> None:
    """A usage error if `spec`, a model of kind `found`, is not what a setting asking for `kind` takes."""
    if found == kind:
        return
    option = KINDS[kind]["option"]
    role, wanted = KINDS[found]["role"], KINDS[kind]["role"]
    names = ", ".join(_names_of(kind))
    places = KINDS[kind]["places"]
    raise UsageError(
        f"{ref(option)} {spec}: {role}, but this setting takes {wanted} ({names}, {places}).",
        option=option,
        value=spec,
    )


def peek_defaults(spec: str, kind: str) -> dict | None:
    """The model's defaults if they can be known without the network (registry, folder, cache), else None."""
    entry = get_entry(spec)
    if entry is not None:
        return dict(entry.defaults)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _known_folder_defaults(path, kind)
    if path.is_file():
        return file_defaults(path)
    imported = imported_model(spec)
    if imported is not None:
        return imported.defaults()
    if _REPO_ID.match(spec):
        folder = cached_snapshot(spec, "main", None, kind) or cached_snapshot(spec, "main", "fp16", kind)
        return _known_folder_defaults(folder, kind) if folder else None
    return None


def peek_family(spec: str) -> str | None:
    """The family of the video model `spec` names, if known without the network (registry, folder, single file)."""
    entry = get_entry(spec)
    if entry is not None:
        return entry.family
    path = Path(spec).expanduser()
    if path.is_dir():
        found = folder_type(path)
        return found[1] if found is not None else None
    if path.is_file():
        header = read_header(path)
        check_svd_file(header)
        return file_family(header)
    imported = imported_model(spec)
    return imported.family if imported is not None else None


def _known_folder_defaults(folder: Path, kind: str) -> dict | None:
    """The defaults of a folder of `kind` (VIDEO: of the family it holds), None when what it holds is unknown."""
    found = folder_type(folder) if kind == VIDEO else (kind, None)
    return folder_defaults(folder, *found) if found is not None else None


def _folder_kind(folder: Path) -> str | None:
    """The kind of model a folder holds (from its model_index.json), None if unreadable."""
    found = folder_type(folder)
    return found[0] if found is not None else None


def on_disk(spec: str) -> bool:
    """Whether using `spec` needs no download (built in, a folder, or already in the cache). No network."""
    entry = get_entry(spec)
    if entry is not None:
        return entry.builtin is not None or local_snapshot(entry) is not None
    if Path(spec).expanduser().exists() or _looks_like_path(spec) or not _REPO_ID.match(spec):
        return True  # a folder, or not a repo id at all: resolving it says what is wrong, nothing downloads

    return any(cached_snapshot(spec, "main", variant, VIDEO) is not None for variant in (None, "fp16"))


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
    if entry.builtin:
        if entry.kind in FILE_KINDS:
            path = tiny_file(entry.builtin)
            return path if path.is_file() else None
        folder = tiny_model_dir(entry.builtin)
        return folder if (folder / "model_index.json").is_file() else None

    if entry.url:
        return cached_url_file(entry.md5, entry.file)
    if entry.file:
        path = cached_file(entry.repo, entry.revision, entry.file)
        return path.parent if path else None
    folder = cached_snapshot(entry.repo, entry.revision, entry.variant, entry.kind, entry.family)
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
                "kind": entry.kind,
                "family": entry.family,
                "frames": entry.frames,
                "repo": entry.repo or entry.url or "built-in",
                "downloaded": folder is not None,
                "size_bytes": disk_size(folder) if folder else None,
                "download_gb": entry.download_gb,
                "gated": entry.gated,
                "path": str(folder) if folder else None,
            }
        )

    local = dict(downloaded=True, download_gb=0.0, gated=False)
    for row in imported_models():
        folder = Path(row["path"])
        frames = folder_defaults(folder, *(folder_type(folder) or (VIDEO, None)))["frames"]
        rows.append({"name": row["name"], "frames": frames, "repo": "imported", "size_bytes": disk_size(folder),
                     "path": str(folder), "source": row["source"], **local})  # fmt: skip
    for row in seen_files():
        if "model" in row["roles"]:
            path = Path(row["path"])
            rows.append({"name": path.stem, "frames": _file_frames(path), "repo": "single file",
                         "size_bytes": row["size"], "path": row["path"], "sha256": row["sha256"], **local})  # fmt: skip
    return rows


def verify_models(spec: str | None = None) -> list[dict]:
    """Check the weights files of one model (or every model on disk) without downloading anything.

    Each row: name, path (None if not on disk) and problems (one sentence each, with the fix).
    """

    specs = [e.name for e in load_registry().values() if local_snapshot(e) is not None] if spec is None else [spec]
    rows = []
    for name in specs:
        entry = get_entry(name)
        path = Path(name).expanduser()
        if entry is not None:
            kind, family = entry.kind, entry.family
        else:
            kind, family = (folder_type(path) if path.is_dir() else None) or (VIDEO, None)
        if entry is not None:
            folder, variant, downloaded = local_snapshot(entry), entry.variant, entry.repo is not None
        elif path.is_dir():
            folder, variant, downloaded = path, detect_variant(path, kind, family), False
        elif _REPO_ID.match(name) and not _looks_like_path(name):
            folder = cached_snapshot(name, "main", None, kind) or cached_snapshot(name, "main", "fp16", kind)
            variant, downloaded = (detect_variant(folder, kind) if folder else None), True
        else:
            raise UsageError(f"{name}: not a model name ({', '.join(model_names())}), a folder or a Hub repo id.")
        row = {"name": name, "path": str(folder) if folder else None, "problems": []}
        if folder is None:
            row["problems"].append(f"{name} is not on this machine: run `svd weights pull {name}`.")
        elif entry is not None and (entry.file or entry.kind in FILE_KINDS):  # one file, not a folder
            path = _entry_weights_file(entry)
            row["path"] = str(path)
            advice = repair_advice(name, entry, downloaded or entry.url is not None)
            if problem := _downloaded_file_problem(entry, path):
                row["problems"].append(f"{path} {problem}; {advice}.")
        else:
            try:
                check_model_folder(folder, variant, kind, family)
            except (UsageError, ModelUnavailableError) as exc:
                row["problems"].append(exc.marked())
            advice = repair_advice(name, entry, downloaded)
            row["problems"] += [
                f"{p} {problem}; {advice}." for p, problem in damaged_files(folder, variant, kind, family, hashes=True)
            ]
        rows.append(row)
    return rows


def _entry_weights_file(entry: ModelEntry) -> Path:
    """The one weights file of a single-file registry entry on disk (the built-in upscaler's, or the download)."""
    if entry.builtin or entry.url:
        return local_snapshot(entry)

    return cached_file(entry.repo, entry.revision, entry.file)


def _file_frames(path: Path) -> int:

    return frames_for(read_header(path))


def file_defaults(path: Path) -> dict:
    """Defaults of a single-file checkpoint (checked from its header, no weights read): 25 frames for XT files."""

    header = read_header(path)
    check_svd_file(header)
    defaults = model_defaults(VIDEO, file_family(header))
    defaults["frames"] = frames_for(header)
    return defaults


def resolve_single_file(path: Path, progress: Progress) -> ModelSource:
    """A single-file checkpoint: its header checked, its architecture known, its identity recorded.

    If `svd weights import` saved this very file (same SHA-256) in diffusers layout, that copy is loaded.
    """

    header = read_header(path)
    check_svd_file(header)
    identity = file_identity(path, "model", progress) | {"arch": match_architecture(header)}
    folder = imported_folder(identity["sha256"])
    if folder is not None:
        progress.note(f"Using the imported copy of {path.name} ({folder})")
        return imported_source(path.stem, folder, identity)
    return ModelSource(name=path.stem, path=path.resolve(), kind=VIDEO, family=file_family(header),
                       single_file=identity)  # fmt: skip


# --- imported single files: diffusers layout in svd's cache ---------------------------------------------------


def imports_dir() -> Path:

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
            return imported_source(name, folder, row["source"])
    return None


def imported_source(name: str, folder: Path, identity: dict) -> ModelSource:
    """An imported single file's folder (diffusers layout, its family's pipeline class) as a model source."""
    kind, family = folder_type(folder) or (VIDEO, None)
    variant = detect_variant(folder, kind, family)
    return ModelSource(name=name, path=folder, kind=kind, family=family, variant=variant, single_file=identity)


def import_single_file(path: Path, name: str | None = None, progress: Progress | None = None) -> Path:
    """Convert a single-file checkpoint once and save it in diffusers layout (fp16) in svd's cache."""
    import json
    import os
    import shutil
    import tempfile

    import torch

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
    """Bytes the model's files take (following the Hub cache's symlinks to their blobs); a file's own size."""
    if folder.is_file():
        return folder.stat().st_size
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def _entry_file(
    entry: ModelEntry, repo: str, filename: str, download: bool, progress: Progress, revision: str = "main"
) -> Path:
    """A registry entry's file on this machine, downloaded first if it is not: from `repo` on the Hub, or from the
    entry's own address (its url) when it has one."""
    path = _cached_entry_file(entry, repo, filename, revision)
    if path is None:
        if not download:
            raise ModelUnavailableError(
                f"{entry.name} is not downloaded yet: run `svd weights pull {entry.name}`.", model=entry.name
            )
        if entry.url:
            path = download_url(entry.name, entry.url, entry.md5, filename, download_gb=entry.download_gb,
                                progress=progress, kind=entry.kind)  # fmt: skip
        else:
            path = download_file(entry.name, repo, revision, filename, gated=entry.gated,
                                 download_gb=entry.download_gb, progress=progress, kind=entry.kind)  # fmt: skip
    return path


def _cached_entry_file(entry: ModelEntry, repo: str, filename: str, revision: str) -> Path | None:
    """A registry entry's file if it was downloaded before (from its address, or from `repo` on the Hub)."""
    return cached_url_file(entry.md5, filename) if entry.url else cached_file(repo, revision, filename)


def _downloaded_file_problem(entry: ModelEntry, path: Path) -> str | None:
    """What is wrong with a registry entry's downloaded file: its header, then its content against the hash its
    source gives (the MD5 of its publisher's address, or the SHA-256 the Hub's cache names its blob by)."""
    return weights_file_problem(path) or (md5_problem(path, entry.md5) if entry.url else hash_problem(path))


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
    kind: str,
    repair: bool = False,
) -> ModelSource:

    kind, family = (entry.kind, entry.family) if entry else (kind, None)
    folder = cached_snapshot(repo, revision, variant, kind, family)
    if folder is None and entry is None and variant is None:
        folder = cached_snapshot(repo, revision, "fp16", kind)
        variant = "fp16" if folder is not None else None
    if folder is not None and repair:
        damaged = damaged_files(folder, variant, kind, family, hashes=True)
        for path, problem in damaged:
            progress.note(f"{path} {problem}; downloading it again")
            forget_cached_file(path)
        if damaged:
            folder = None
    if folder is None:
        if not download:
            raise ModelUnavailableError(f"{name} is not downloaded yet: run `svd weights pull {name}`.", model=name)
        folder, variant = download_snapshot(
            name, repo, revision, variant, gated=bool(entry and entry.gated),
            download_gb=entry.download_gb if entry else 0.0, progress=progress, kind=kind, family=family,
        )  # fmt: skip
    if family is None and kind == VIDEO:  # a repo id: the family is the one its model_index.json names
        found, family = folder_type(folder) or (kind, None)
        check_found(name, found, kind)
    check_model_folder(folder, variant, kind, family)
    if repair and (damaged := damaged_files(folder, variant, kind, family, hashes=True)):
        path, problem = damaged[0]
        raise ModelUnavailableError(f"{path} {problem} even after downloading it again; try again later.", path=path)
    return ModelSource(
        name=name,
        path=folder,
        repo=repo,
        revision=revision,
        commit=snapshot_commit(folder),
        variant=variant,
        entry=entry,
        kind=kind,
        family=family,
    )
