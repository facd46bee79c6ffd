"""What a model folder in diffusers layout must hold, checked without loading anything or touching the network.

Each kind of model has its own weight components: a video model's are its family's (SVD's UNet, VAE and CLIP
image encoder); a text-to-image model's UNet, VAE and CLIP text encoder(s) with their tokenizers. Downloads fetch
exactly these (configs, tokenizer files, one safetensors file per component) and nothing else: no pickles, no
single-file copies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ModelLoadError, ModelUnavailableError, UsageError, ref
from ..families import FAMILIES
from ..kinds import KINDS, VIDEO, folder_type
from .files import file_digest, file_sha256

# Per kind that has no family (a video model's family lists its own: families/): component folder -> file stem of
# its weights. A "*" in a folder is a glob for the download (SDXL has text_encoder and text_encoder_2); the
# folders a model really has come from its model_index.json.
OTHER_COMPONENTS = {
    "text-to-image": {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder*": "model"},
}
CONFIG_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*/preprocessor_config.json"]
# Tokenizers are small text files (vocab.json, merges.txt, tokenizer.json, their configs).
EXTRA_PATTERNS = {"text-to-image": ["tokenizer*/*.json", "tokenizer*/*.txt"]}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def _suffix(variant: str | None) -> str:
    return f".{variant}.safetensors" if variant else ".safetensors"


def weight_name(component: str, stem: str, variant: str | None) -> str:
    """A component's weights file within a model folder ("unet/diffusion_pytorch_model.fp16.safetensors")."""
    return f"{component}/{stem}{_suffix(variant)}"


def candidate_components(kind: str, family: str | None = None) -> list[dict[str, str]]:
    """The component tables a model of `kind` may have: one, or for a video model of no known family each
    family's."""
    if kind == VIDEO:
        families = [FAMILIES[family]] if family is not None else list(FAMILIES.values())
        return [dict(each.components) for each in families]
    return [OTHER_COMPONENTS[kind]]


def model_components(kind: str, family: str | None = None, folder: Path | None = None) -> dict[str, str]:
    """Component folder -> weights stem of a model of `kind` (a video model of no known family: of the family
    `folder` holds, else of all)."""
    if kind == VIDEO and family is None and folder is not None:
        kind, family = folder_type(folder) or (kind, family)
    return {name: stem for table in candidate_components(kind, family) for name, stem in table.items()}


def allow_patterns(variant: str | None, kind: str, family: str | None = None) -> list[str]:
    """The files svd downloads: configs, tokenizer files and one safetensors file per component."""
    weights = [weight_name(folder, stem, variant) for folder, stem in model_components(kind, family).items()]
    return CONFIG_PATTERNS + EXTRA_PATTERNS.get(kind, []) + weights


def weight_components(folder: Path | None, kind: str, family: str | None = None) -> dict[str, str]:
    """The component folders whose weights a model of `kind` in `folder` needs (globs expanded by its index)."""
    components = {}
    listed: set[str] = set()
    if folder is not None:
        try:
            index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
            listed = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
        except (OSError, ValueError, AttributeError):
            listed = set()
    for name, stem in model_components(kind, family, folder).items():
        if name.endswith("*"):
            matches = sorted(k for k in listed if k.startswith(name[:-1])) or [name[:-1]]
            components.update({m: stem for m in matches})
        else:
            components[name] = stem
    return components


def detect_variant(folder: Path, kind: str, family: str | None = None) -> str | None:
    """'fp16' when every component has an fp16 safetensors file, else None (plain safetensors)."""
    components = weight_components(folder, kind, family)
    if all((folder / weight_name(f, stem, "fp16")).is_file() for f, stem in components.items()):
        return "fp16"
    return None


def is_complete(folder: Path, variant: str | None, kind: str, family: str | None = None) -> bool:
    if not (folder / "model_index.json").is_file():
        return False
    components = weight_components(folder, kind, family)
    return all((folder / weight_name(f, stem, variant)).is_file() for f, stem in components.items())


# What a model_index.json may name as a component's class: diffusers' and transformers' own. diffusers would
# import any module named there (a "library" of os, a class of system) when the pipeline loads.
COMPONENT_LIBRARIES = ("diffusers", "transformers")
MAX_INDEX_BYTES = 2**20  # real ones are under 1 kB


def index_problem(path: Path) -> str | None:
    """What makes a model_index.json one svd will not load (too big, not JSON, a class from another library)."""
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            return f"is larger than the {MAX_INDEX_BYTES // 2**20} MB a model_index.json can be"
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"cannot be read as JSON ({type(exc).__name__})"
    if not isinstance(index, dict):
        return "is not a table of components"
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2):
            continue  # bookkeeping (_class_name, _diffusers_version) and plain config values
        library, cls = value
        if library is None and cls is None:
            continue  # a component the pipeline leaves out (SD 1.x's safety checker)
        if library not in COMPONENT_LIBRARIES or not (isinstance(cls, str) and cls.isidentifier()):
            return (
                f"names its {name!s:.40} as {library!s:.40}.{cls!s:.40}, not a diffusers or transformers class "
                "(svd loads no other code)"
            )
    return None


def check_model_folder(folder: Path, variant: str | None, kind: str, family: str | None = None) -> None:
    """Refuse a folder that is not a complete pipeline of `kind` in diffusers layout, or that holds only pickles."""

    option = KINDS[kind]["option"]
    if not (folder / "model_index.json").is_file():
        raise UsageError(
            f"{ref(option)} {folder}: no model_index.json there; point it at a diffusers-layout folder "
            "(as saved by a diffusers pipeline's save_pretrained) or use a model name.",
            option=option,
            path=folder,
        )
    if problem := index_problem(folder / "model_index.json"):
        raise ModelLoadError(
            f"{folder / 'model_index.json'} {problem}; fix the file, or save the pipeline again with diffusers' "
            "save_pretrained.",
            path=folder / "model_index.json",
        )
    for component, stem in weight_components(folder, kind, family).items():
        sub = folder / component
        wanted = folder / weight_name(component, stem, variant)
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

# Bounds on the safetensors header svd is willing to parse. Real headers are far below them (a whole SVD
# checkpoint: about 3,000 tensors, 0.3 MB of header); a file beyond them is refused before any work instead of
# costing minutes and gigabytes of memory to parse.
MAX_HEADER_BYTES = 16 * 2**20
MAX_TENSORS = 100_000
MAX_TENSOR_BYTES = 2**50  # 1 PiB: an offset or size beyond it is damage, not a big tensor
# A header length at or past this (4 GiB) that is also past the file's end is another format's first 8 bytes
# (text, an image, a pickle: little-endian they read 10**17 and more), not a header or a truncated download.
NOT_A_LENGTH = 2**32
# Bits per element of each safetensors dtype.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64,
    "U64": 64, "F64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


class HeaderProblem(ValueError):
    """A safetensors header that svd refuses; the message is a phrase such as "is truncated (...)".

    `truncated`: the file stops early (a download or copy cut short: getting it again fixes it), as opposed to a
    file that is damaged or was never a safetensors file svd reads.
    """

    def __init__(self, phrase: str, *, truncated: bool = False):
        super().__init__(phrase)
        self.truncated = truncated


def _whole(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_TENSOR_BYTES


def _header_length(head: bytes, size: int) -> int:
    """The header length a safetensors file's first 8 bytes give, refused when it cannot be one."""
    length = int.from_bytes(head, "little")
    if length > max(size, NOT_A_LENGTH):  # no header is that long: the 8 bytes were never a header's length
        raise HeaderProblem(
            "is not a safetensors file (its first 8 bytes are not a header length: they read "
            f"{length:,} bytes for a file of {size:,}); it may be another format, or a file renamed"
        )
    if length > MAX_HEADER_BYTES:
        raise HeaderProblem(
            f"is not a file svd reads: its safetensors header claims {length:,} bytes, more than the "
            f"{MAX_HEADER_BYTES // 2**20} MB svd parses"
        )
    if length > size - 8:
        raise HeaderProblem(
            f"is truncated or corrupt (its header claims {length:,} bytes; the file has {size:,})", truncated=True
        )
    return length


def parse_header(path: Path) -> tuple[int, bytes, dict]:
    """(file size, header bytes, header table) of a safetensors file, checked the way safetensors checks it.

    Every tensor needs a known dtype, a shape of whole numbers and offsets that hold exactly its bytes, the
    tensors packed one after another; the header and tensor count are bounded (MAX_HEADER_BYTES, MAX_TENSORS).
    Raises OSError when the file cannot be read, HeaderProblem for everything else.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HeaderProblem(f"is truncated ({size:,} bytes, not even a header)", truncated=True)
        length = _header_length(head, size)
        raw = f.read(length)
    try:
        table = json.loads(raw)
    except RecursionError:  # brackets nested thousands deep; a real header nests three levels
        raise HeaderProblem("is corrupt (its safetensors header nests deeper than any safetensors header)") from None
    except ValueError:
        raise HeaderProblem("is corrupt (its safetensors header is not valid JSON)") from None
    if not isinstance(table, dict):
        raise HeaderProblem("is corrupt (its safetensors header is not a table of tensors)")
    metadata = table.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderProblem("is corrupt (its safetensors metadata is not a table of strings)")
    if (count := len(table) - ("__metadata__" in table)) > MAX_TENSORS:
        raise HeaderProblem(
            f"is not a file svd reads: its header lists {count:,} tensors, more than the {MAX_TENSORS:,} svd accepts"
        )
    spans = []
    for name, info in table.items():
        if name == "__metadata__":
            continue
        spans.append((_span(name, info), name))
    end = 0
    for (begin, stop), name in sorted(spans):
        if begin != end:
            raise HeaderProblem(f"is corrupt (tensor {name!r} starts at byte {begin:,} of the data, not {end:,})")
        end = stop
    expected = 8 + length + end
    if size < expected:
        raise HeaderProblem(f"is truncated ({size:,} bytes; its header describes {expected:,})", truncated=True)
    if size > expected:
        raise HeaderProblem(f"is corrupt ({size:,} bytes; its header describes {expected:,})")
    return size, raw, table


def _span(name: str, info) -> tuple[int, int]:
    """[begin, end) of one tensor's bytes, refused unless they are exactly its dtype times its shape."""
    damaged = f"is corrupt (the safetensors header entry {name[:80]!r} is damaged"
    if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BITS:
        raise HeaderProblem(f"{damaged}: no known dtype)")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_whole(n) for n in shape):
        raise HeaderProblem(f"{damaged}: its shape is not a list of whole numbers)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(n) for n in offsets):
        raise HeaderProblem(f"{damaged}: its data offsets are not two whole numbers)")
    begin, end = offsets
    count = 1
    for n in shape:
        count *= n
    if end < begin or (end - begin) * 8 != count * DTYPE_BITS[info["dtype"]]:
        raise HeaderProblem(
            f"{damaged}: {info['dtype']} {tuple(shape)} needs {count * DTYPE_BITS[info['dtype']] / 8:,.0f} bytes "
            f"but its offsets hold {end - begin:,})"
        )
    return begin, end


def weight_files(folder: Path, variant: str | None, kind: str, family: str | None = None) -> list[Path]:
    """The safetensors file of every component that svd loads from `folder`."""
    files = []
    for component, stem in weight_components(folder, kind, family).items():
        wanted = folder / weight_name(component, stem, variant)
        files.append(wanted if wanted.is_file() else next(iter(sorted((folder / component).glob("*.safetensors"))),
                                                          wanted))  # fmt: skip
    return files


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, judged from its header and its size (no tensor is read)."""
    try:
        parse_header(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except HeaderProblem as exc:
        return str(exc)
    return None


def onnx_problem(path: Path) -> str | None:
    """What is wrong with an ONNX file, judged from its first bytes: a serialised ModelProto begins with its
    ir_version field (protobuf tag 0x08); whether the rest is whole, onnxruntime tells when it reads it."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes)"
    if head[0] != 0x08:
        return "is not an ONNX model (it does not begin as one)"
    return None


def weights_file_problem(path: Path) -> str | None:
    """What is wrong with a one-file model, by its kind of file: an ONNX file's beginning, else a safetensors
    file's header."""
    return onnx_problem(path) if path.suffix.lower() == ".onnx" else safetensors_problem(path)


def hash_problem(path: Path) -> str | None:
    """For a file in the Hugging Face cache: whether its content still has the SHA-256 its blob is named by."""
    blob = path.resolve()
    if not re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return None  # not a content-addressed blob (a local folder, or a cache without symlinks)
    if file_sha256(blob) != blob.name:
        return "is corrupt (its SHA-256 differs from the Hub's)"
    return None


def md5_problem(path: Path, md5: str) -> str | None:
    """For a file downloaded from an address: whether its content still has the MD5 its publisher gives."""
    if file_digest(path, "md5") != md5:
        return "is corrupt (its MD5 differs from its publisher's)"
    return None


def damaged_files(
    folder: Path, variant: str | None, kind: str, family: str | None = None, *, hashes: bool = False
) -> list[tuple[Path, str]]:
    """(file, what is wrong) for every weights file that would not load; `hashes` also checks content hashes."""
    problems = []
    for path in weight_files(folder, variant, kind, family):
        if not path.is_file():
            continue  # a missing file is check_model_folder's to report
        problem = safetensors_problem(path) or (hash_problem(path) if hashes else None)
        if problem:
            problems.append((path, problem))
    return problems
