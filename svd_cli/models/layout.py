"""What a model folder in diffusers layout must hold, checked without loading anything or touching the network.

Each kind of model has its own weight components: SVD's UNet, VAE and CLIP image encoder; a text-to-image
model's UNet, VAE and CLIP text encoder(s) with their tokenizers. Downloads fetch exactly these (configs,
tokenizer files, one safetensors file per component) and nothing else: no pickles, no single-file copies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ModelUnavailableError, UsageError, ref

# Per kind: component folder -> file stem of its weights. A "*" in a folder is a glob for the download
# (SDXL has text_encoder and text_encoder_2); the folders a model really has come from its model_index.json.
KIND_COMPONENTS = {
    "svd": {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"},
    "text-to-image": {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder*": "model"},
}
WEIGHT_COMPONENTS = KIND_COMPONENTS["svd"]
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*/preprocessor_config.json"]
# Tokenizers are small text files (vocab.json, merges.txt, tokenizer.json, their configs).
KIND_EXTRA_PATTERNS = {"svd": [], "text-to-image": ["tokenizer*/*.json", "tokenizer*/*.txt"]}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def _suffix(variant: str | None) -> str:
    return f".{variant}.safetensors" if variant else ".safetensors"


def allow_patterns(variant: str | None, kind: str = "svd") -> list[str]:
    """The files svd downloads: configs, tokenizer files and one safetensors file per component."""
    weights = [f"{folder}/{stem}{_suffix(variant)}" for folder, stem in KIND_COMPONENTS[kind].items()]
    return CONFIG_PATTERNS + KIND_EXTRA_PATTERNS[kind] + weights


def weight_components(folder: Path | None, kind: str = "svd") -> dict[str, str]:
    """The component folders whose weights a model of `kind` in `folder` needs (globs expanded by its index)."""
    components = {}
    listed: set[str] = set()
    if folder is not None:
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
            listed = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
        except (OSError, ValueError, AttributeError):
            listed = set()
    for name, stem in KIND_COMPONENTS[kind].items():
        if name.endswith("*"):
            matches = sorted(k for k in listed if k.startswith(name[:-1])) or [name[:-1]]
            components.update({m: stem for m in matches})
        else:
            components[name] = stem
    return components


def detect_variant(folder: Path, kind: str = "svd") -> str | None:
    """'fp16' when every component has an fp16 safetensors file, else None (plain safetensors)."""
    components = weight_components(folder, kind)
    if all((folder / f / f"{stem}.fp16.safetensors").is_file() for f, stem in components.items()):
        return "fp16"
    return None


def is_complete(folder: Path, variant: str | None, kind: str = "svd") -> bool:
    if not (folder / "model_index.json").is_file():
        return False
    components = weight_components(folder, kind)
    return all((folder / f / f"{stem}{_suffix(variant)}").is_file() for f, stem in components.items())


def check_model_folder(folder: Path, variant: str | None = None, kind: str = "svd") -> None:
    """Refuse a folder that is not a complete pipeline of `kind` in diffusers layout, or that holds only pickles."""
    from .kinds import KIND_DEFAULTS

    option = KIND_DEFAULTS[kind]["option"]
    if not (folder / "model_index.json").is_file():
        raise UsageError(
            f"{ref(option)} {folder}: no model_index.json there; point it at a diffusers-layout folder "
            "(as saved by a diffusers pipeline's save_pretrained) or use a model name.",
            option=option,
            path=folder,
        )
    for component, stem in weight_components(folder, kind).items():
        sub = folder / component
        wanted = sub / f"{stem}{_suffix(variant)}"
        if wanted.is_file() or any(sub.glob("*.safetensors")):
            continue
        pickles = [p.name for p in sub.glob("*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelUnavailableError(
                f"{sub} has only pickle weights ({', '.join(sorted(pickles))}); svd loads safetensors only, "
                "because pickle files can run code: convert them with diffusers' save_pretrained(..., "
                "safe_serialization=True) first.",
                path=sub,
            )
        raise ModelUnavailableError(
            f"{sub} has no {wanted.name}; the download is incomplete: run `svd weights pull` for this "
            "model again (it fetches only what is missing).",
            path=sub,
        )


# --- damaged files ---------------------------------------------------------------------------------------

MAX_HEADER_BYTES = 100 * 2**20


def weight_files(folder: Path, variant: str | None, kind: str = "svd") -> list[Path]:
    """The safetensors file of every component that svd loads from `folder`."""
    files = []
    for component, stem in KIND_COMPONENTS[kind].items():
        wanted = folder / component / (f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors")
        files.append(wanted if wanted.is_file() else next(iter(sorted((folder / component).glob("*.safetensors"))),
                                                          wanted))  # fmt: skip
    return files


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, judged from its header and its size (no tensor is read)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes, not even a header)"
            length = int.from_bytes(head, "little")
            if length > min(size - 8, MAX_HEADER_BYTES):
                return f"is truncated or corrupt (its header claims {length} bytes; the file has {size})"
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "is corrupt (its safetensors header is not valid)"
    expected = 8 + length + end
    if size < expected:
        return f"is truncated ({size} bytes; its header describes {expected})"
    if size > expected:
        return f"is corrupt ({size} bytes; its header describes {expected})"
    return None


def hash_problem(path: Path) -> str | None:
    """For a file in the Hugging Face cache: whether its content still has the SHA-256 its blob is named by."""
    import hashlib

    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return None  # not a content-addressed blob (a local folder, or a cache without symlinks)
    digest = hashlib.sha256()
    with blob.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != blob.name:
        return "is corrupt (its SHA-256 differs from the Hub's)"
    return None


def damaged_files(
    folder: Path, variant: str | None, kind: str = "svd", *, hashes: bool = False
) -> list[tuple[Path, str]]:
    """(file, what is wrong) for every weights file that would not load; `hashes` also checks content hashes."""
    problems = []
    for path in weight_files(folder, variant, kind):
        if not path.is_file():
            continue  # a missing file is check_model_folder's to report
        problem = safetensors_problem(path) or (hash_problem(path) if hashes else None)
        if problem:
            problems.append((path, problem))
    return problems
