"""Weight files svd was pointed at (single-file models, UNets, LoRAs): their identity for the recipe, remembered.

A recipe records each file's path, size and SHA-256 (of the whole file, streamed in 1 MiB blocks). Hashing a
10 GB checkpoint takes a while, so the digest is remembered in svd's cache (`files.json`) by path, size and
modification time, and computed again only when one of them changes. The same list lets `svd weights list`
show the single files it has seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from ..paths import cache_dir
from ..progress import size_text


def _index_path() -> Path:
    return cache_dir() / "files.json"


def _load_index() -> dict:
    try:
        data = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_index(index: dict) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """The SHA-256 of the whole file at `path` (hex), read in 1 MiB blocks so a 10 GB file takes no memory."""
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    """The hashlib `algorithm` digest (hex) of the whole file at `path`, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path, role: str, progress=None) -> dict:
    """{"path", "size", "sha256"} of a weight file; the digest comes from the cache while the file is unchanged."""
    path = Path(path).resolve()
    stat = path.stat()
    index = _load_index()
    known = index.get(str(path))
    if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        digest = known["sha256"]
    else:
        if progress is not None and stat.st_size > 2**30:
            progress.note(f"Hashing {path.name} ({size_text(stat.st_size)}) for the recipe; once per file")
        digest = file_sha256(path)
    roles = sorted({*(known or {}).get("roles", []), role})
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest, "roles": roles}
    with contextlib.suppress(OSError):  # a read-only cache only costs hashing again next time
        _save_index(index)
    return {"path": str(path), "size": stat.st_size, "sha256": digest}


def seen_files() -> list[dict]:
    """Every weight file svd has been pointed at that still exists: path, size, digest, roles."""
    rows = []
    for path, info in sorted(_load_index().items()):
        if Path(path).is_file():
            rows.append({"path": path, "size": info.get("size"), "sha256": info.get("sha256"),
                         "roles": info.get("roles", [])})  # fmt: skip
    return rows
