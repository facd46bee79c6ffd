"""Finding model weights on disk and fetching them from the Hugging Face Hub.

This is the only module that talks to the network. It turns what the user typed after `--model` (a name from
weights.toml, a local folder or a Hub repo id) into a local folder in diffusers layout, downloading only the
files the pipeline needs: the configs and one safetensors file per component, fp16 where the repo has it.
Every way this can fail ends in a `ModelUnavailableError` whose message names the command that fixes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailableError, UsageError
from .progress import NullProgress, Progress
from .registry import ModelEntry, get_entry, model_names

WEIGHT_COMPONENTS = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "image_encoder": "model",
}
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*/preprocessor_config.json"]
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
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

    def describe(self) -> dict:
        return {
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "commit": self.commit,
            "variant": self.variant,
            "path": str(self.path),
        }


def offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in {"1", "ON", "YES", "TRUE"}


def allow_patterns(variant: str | None) -> list[str]:
    if variant:
        weights = [f"{folder}/{stem}.{variant}.safetensors" for folder, stem in WEIGHT_COMPONENTS.items()]
    else:
        weights = [f"{folder}/{stem}.safetensors" for folder, stem in WEIGHT_COMPONENTS.items()]
    return CONFIG_PATTERNS + weights


def detect_variant(folder: Path) -> str | None:
    """'fp16' when every component has an fp16 safetensors file, else None (plain safetensors)."""
    if all((folder / f / f"{stem}.fp16.safetensors").is_file() for f, stem in WEIGHT_COMPONENTS.items()):
        return "fp16"
    return None


def check_model_folder(folder: Path, variant: str | None = None) -> None:
    """Refuse a folder that is not a complete SVD pipeline in diffusers layout, or that holds only pickles."""
    if not (folder / "model_index.json").is_file():
        raise UsageError(
            f"--model {folder}: no model_index.json there; point --model at a diffusers-layout folder "
            "(as saved by StableVideoDiffusionPipeline.save_pretrained) or use a model name."
        )
    for component, stem in WEIGHT_COMPONENTS.items():
        sub = folder / component
        wanted = sub / (f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors")
        if wanted.is_file() or any(sub.glob("*.safetensors")):
            continue
        pickles = [p.name for p in sub.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelUnavailableError(
                f"{sub} has only pickle weights ({', '.join(sorted(pickles))}); svd loads safetensors only, "
                "because pickle files can run code: convert them with diffusers' save_pretrained(..., "
                "safe_serialization=True) first."
            )
        raise ModelUnavailableError(
            f"{sub} has no {wanted.name}; the download is incomplete: run `svd weights pull` for this "
            "model again (it fetches only what is missing)."
        )


def resolve_model(spec: str, *, download: bool = True, progress: Progress | None = None) -> ModelSource:
    """Turn `--model` into a local folder, downloading (with progress) when the weights are not on disk."""
    progress = progress or NullProgress()
    entry = get_entry(spec)
    if entry is not None:
        if entry.builtin == "tiny":
            from .tiny import ensure_tiny_model, tiny_model_dir

            if not (tiny_model_dir() / "model_index.json").is_file():
                progress.note("Building the built-in tiny model (first use only)")
            return ModelSource(name=entry.name, path=ensure_tiny_model(), entry=entry)
        return _resolve_repo(entry.name, entry.repo, entry.revision, entry.variant, entry, download, progress)

    path = Path(spec).expanduser()
    if path.is_dir():
        variant = detect_variant(path)
        check_model_folder(path, variant)
        return ModelSource(name=path.name, path=path.resolve(), variant=variant)
    if _looks_like_path(spec) or not _REPO_ID.match(spec):
        raise UsageError(
            f"--model {spec}: not a model name ({', '.join(model_names())}), an existing folder or a Hub "
            "repo id like stabilityai/stable-video-diffusion-img2vid-xt."
        )
    return _resolve_repo(spec, spec, "main", None, None, download, progress)


def local_snapshot(entry: ModelEntry) -> Path | None:
    """The complete local copy of a registry model, or None; never touches the network."""
    if entry.builtin == "tiny":
        from .tiny import tiny_model_dir

        folder = tiny_model_dir()
        return folder if (folder / "model_index.json").is_file() else None
    return _cached_snapshot(entry.repo, entry.revision, entry.variant)


def weights_status() -> list[dict]:
    """Every registry model: what it is and whether (and where) its weights are on disk. No network."""
    from .registry import load_registry

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


def _cached_snapshot(repo: str, revision: str, variant: str | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(repo, revision=revision, allow_patterns=allow_patterns(variant), local_files_only=True)
        )
    except Exception:
        return None
    if not _complete(folder, variant):
        return None
    return folder


def _complete(folder: Path, variant: str | None) -> bool:
    if not (folder / "model_index.json").is_file():
        return False
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    return all((folder / f / f"{stem}{suffix}").is_file() for f, stem in WEIGHT_COMPONENTS.items())


def _resolve_repo(
    name: str,
    repo: str,
    revision: str,
    variant: str | None,
    entry: ModelEntry | None,
    download: bool,
    progress: Progress,
) -> ModelSource:
    folder = _cached_snapshot(repo, revision, variant)
    if folder is None and entry is None and variant is None:
        folder = _cached_snapshot(repo, revision, "fp16")
        variant = "fp16" if folder is not None else None
    if folder is None:
        if not download:
            raise ModelUnavailableError(f"{name} is not downloaded yet: run `svd weights pull {name}`.")
        folder, variant = download_snapshot(name, repo, revision, variant, entry, progress)
    check_model_folder(folder, variant)
    return ModelSource(
        name=name,
        path=folder,
        repo=repo,
        revision=revision,
        commit=folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None,
        variant=variant,
        entry=entry,
    )


def download_snapshot(
    name: str,
    repo: str,
    revision: str,
    variant: str | None,
    entry: ModelEntry | None,
    progress: Progress,
) -> tuple[Path, str | None]:
    """Fetch the pipeline's files (keeping any already in the cache); map every Hub failure to one sentence."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    gated = entry is not None and entry.gated
    fix = f"`svd weights pull {name}`"
    if offline_mode():
        raise ModelUnavailableError(
            f"{name} is not downloaded and HF_HUB_OFFLINE=1 forbids downloading it: unset HF_HUB_OFFLINE "
            f"and run {fix} while online, or use --model tiny or a local folder."
        )
    try:
        if entry is None and variant is None:
            variant = _remote_variant(repo, revision)
        size = f" (about {entry.download_gb:.1f} GB)" if entry and entry.download_gb else ""
        progress.note(f"Downloading {name}{size} from the Hugging Face Hub ({repo}, revision {revision})")
        if progress.interactive:
            enable_progress_bars()
        else:
            disable_progress_bars()
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=allow_patterns(variant)))
    except ModelUnavailableError:
        raise
    except Exception as exc:  # every Hub failure becomes one sentence with its fix
        raise ModelUnavailableError(_explain_hub_error(exc, name, repo, revision, gated, fix)) from exc
    if not _complete(folder, variant):
        raise ModelUnavailableError(
            f"{repo} at revision {revision} lacks the safetensors weights svd needs "
            f"({', '.join(allow_patterns(variant)[len(CONFIG_PATTERNS) :])}); svd never loads pickle files."
        )
    return folder, variant


def _remote_variant(repo: str, revision: str) -> str | None:
    from huggingface_hub import HfApi

    files = set(HfApi().list_repo_files(repo, revision=revision))
    if all(f"{f}/{stem}.fp16.safetensors" in files for f, stem in WEIGHT_COMPONENTS.items()):
        return "fp16"
    return None


def _explain_hub_error(exc: Exception, name: str, repo: str, revision: str, gated: bool, fix: str) -> str:
    from huggingface_hub import errors as hf_errors

    url = f"https://huggingface.co/{repo}"
    if isinstance(exc, hf_errors.GatedRepoError) or (gated and _status(exc) in (401, 403)):
        return (
            f"{name} ({repo}) is gated: accept its licence at {url} while logged in, then log in here with "
            f"`hf auth login` (or set HF_TOKEN to an access token) and run {fix}."
        )
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return f"{repo} has no revision {revision!r}: fix the revision in weights.toml or --model."
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return (
            f"{repo} was not found on the Hub (or it is private and you are not logged in): check --model, "
            "or log in with `hf auth login`."
        )
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return (
            f"The disk filled up while downloading {name}: free some space or point HF_HOME at a larger "
            f"disk, then run {fix} (files already downloaded are kept)."
        )
    return (
        f"Cannot reach the Hugging Face Hub to download {name}: connect to the internet and run {fix} "
        "(files already downloaded are kept), or use --model tiny or a local folder."
    )


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)
