"""What svd may write, replace or delete: the file-safety rule, in one place.

The rule: svd writes only files it owns, an output path it computed and whose recipe sidecar says svd made
it, and never deletes or replaces anything else.

- Every output has its own sidecar: `photo.mp4` -> `photo.mp4.json`, a frames folder `photo/` ->
  `photo.frames.json`, so two formats of one photo never share one.
- `check_outputs` refuses a plan, before any work, whose output would land on an input, on a folder that
  holds an input, or on a folder svd did not make.
- `occupant` says whether an existing output is svd's own (and may be resumed or redone) or someone else's
  (never touched). The writer asks it again right before renaming into place.
- `is_svd_output` lets folder scans skip svd's own outputs, so a rerun of any command only resumes.
- A live preview (`NAME.preview.webp`, io/preview.py) carries a mark in its EXIF description: svd replaces or
  removes only a preview with that mark (`is_own_preview`).
- `claim` takes an output for this process with an exclusive create of a lock file holding its pid; a second
  run skips outputs a live process holds, and temporary files are removed only when their owner is dead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, ref
from .bounded import BoundedReadError, load_json, read_text

TEMP_MARK = ".svd-partial-"
LOCK_MARK = ".svd-lock"
FRAME_PREFIX = "frame_"
PREVIEW_SUFFIX = ".preview.webp"
PREVIEW_MARK = "svd live preview"  # the EXIF ImageDescription of every preview svd writes
LOCK_GRACE_SECONDS = 10.0  # a lock file still empty this long after its creation is a crashed writer's


# --- sidecars ----------------------------------------------------------------------------------------------


def sidecar_path(output: Path, fmt: str) -> Path:
    """The recipe beside an output: photo.mp4 -> photo.mp4.json, frames folder photo/ -> photo.frames.json."""
    return output.with_name(output.name + (".frames" if fmt == "frames" else "") + ".json")


def _load(path: Path) -> dict | None:
    try:
        data = load_json(read_text(path))
    except (OSError, ValueError, BoundedReadError):
        return None
    return data if isinstance(data, dict) else None


def describes(recipe: dict | None, output: Path, fmt: str) -> bool:
    """Whether `recipe` is an svd recipe written for `output` in `fmt`."""
    out = recipe.get("output") if isinstance(recipe, dict) else None
    return (
        isinstance(out, dict)
        and "svd_version" in recipe
        and out.get("format") == fmt
        and Path(str(out.get("path") or "")).name == output.name
    )


def output_digest(output: Path) -> tuple[int, str]:
    """(bytes, SHA-256) of an output as written, recorded in its sidecar so `--overwrite` can tell whether it changed.

    A file is hashed as it is; a frames folder as its PNGs in name order, each name then its bytes.
    """
    digest, size = hashlib.sha256(), 0
    parts = sorted(p for p in output.iterdir() if p.is_file()) if output.is_dir() else [output]
    for part in parts:
        if output.is_dir():
            digest.update(part.name.encode() + b"\0")
        with part.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def changed_since_written(output: Path, recipe: dict) -> bool:
    """Whether `output` differs from the size and SHA-256 its recipe records (older recipes record neither)."""
    recorded = recipe["output"]
    if "sha256" not in recorded:
        return False
    if not output.is_dir() and output.stat().st_size != recorded.get("bytes"):
        return True  # the cheap check first: most edits change the size
    return output_digest(output) != (recorded.get("bytes"), recorded["sha256"])


def recipe_for(output: Path, fmt: str) -> dict | None:
    """The svd recipe describing `output` (its sidecar), or None."""
    path = sidecar_path(output, fmt)
    data = _load(path) if path.is_file() else None
    return data if describes(data, output, fmt) else None


# --- who owns an output -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occupant:
    state: str  # free | own | foreign
    why: str = ""
    recipe: dict | None = None


def occupant(output: Path, fmt: str) -> Occupant:
    """What is at `output` now: nothing, svd's own finished output, or something svd must not touch."""
    sidecar = sidecar_path(output, fmt)
    if not output.exists() and not output.is_symlink():
        if sidecar.exists() and not describes(_load(sidecar), output, fmt):
            return Occupant("foreign", f"{sidecar} exists and is not a recipe svd wrote for {output.name}")
        return Occupant("free")
    recipe = recipe_for(output, fmt)
    if recipe is None:
        return Occupant("foreign", f"{output} exists and svd did not make it (no recipe beside it)")
    if fmt == "frames":
        if output.is_symlink() or not output.is_dir():
            return Occupant("foreign", f"{output} is not the frames folder svd made")
        extra = sorted(p.name for p in output.iterdir() if not _is_frame_file(p))
        if extra:
            return Occupant("foreign", f"{output}/ holds files svd did not write ({', '.join(extra[:3])})")
    elif output.is_symlink() or not output.is_file():
        return Occupant("foreign", f"{output} is not a file svd made")
    if changed_since_written(output, recipe):
        why = f"{output} changed since svd wrote it ({sidecar.name} records another size or SHA-256)"
        return Occupant("foreign", why)
    return Occupant("own", recipe=recipe)


def refusal(occ: Occupant) -> str:
    """The reason a job is left alone because its output belongs to someone else."""
    return f"{occ.why}; svd never replaces what it did not make: move it away or choose another {ref('out')}"


def frame_pngs(folder: Path) -> list[Path]:
    """The frames of a frames folder as players and readers take them: its PNGs in name order."""
    return sorted(folder.glob("*.png"))


def _is_frame_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink() and p.name.startswith(FRAME_PREFIX) and p.suffix == ".png"


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def check_outputs(pairs: list[tuple[Path, Path]], fmt: str) -> None:
    """Refuse (UsageError, before any work) outputs on an input, around an input, or on a folder svd did not make.

    `pairs` are (input, output) for every job of a plan; a job drawn from a prompt has no input (None).
    """
    inputs = {_key(i): i for i, _ in pairs if i is not None}
    for source, output in pairs:
        source = source if source is not None else output
        key = _key(output)
        if key in inputs:
            raise UsageError(
                f"{source}: its output {output} is an input of this run and svd never writes over an input; "
                f"choose another {ref('out')}, {ref('name')} or {ref('format')}.",
                option="out",
                path=output,
            )
        if fmt == "frames":
            inside = next((i for k, i in inputs.items() if k.startswith(key + os.sep)), None)
            if inside is not None:
                raise UsageError(
                    f"{source}: its frames would go to {output}, a folder holding {inside}, an input of this run; "
                    f"choose another {ref('out')} or {ref('name')}.",
                    option="out",
                    path=output,
                )
        if output.is_dir() and (fmt != "frames" or recipe_for(output, fmt) is None):
            raise UsageError(
                f"{source}: its output {output} is a folder svd did not make, and svd never replaces one; "
                f"choose another {ref('out')} or {ref('name')}.",
                option="out",
                path=output,
            )


# --- scans ---------------------------------------------------------------------------------------------------


class OwnOutputs:
    """Recognises svd's own outputs in a folder scan by their sidecars (remembering folders already looked at)."""

    def __init__(self) -> None:
        self._frames_dirs: dict[Path, bool] = {}

    def __contains__(self, path: Path) -> bool:
        if path.name.endswith(PREVIEW_SUFFIX) and is_own_preview(path):
            return True
        fmt = path.suffix.lower().lstrip(".")
        if fmt == "json":  # a recipe sidecar itself
            data = _load(path)
            return data is not None and "svd_version" in data and isinstance(data.get("output"), dict)
        if fmt and recipe_for(path, fmt) is not None:
            return True
        return any(self._frames_dir(parent) for parent in path.parents)

    def _frames_dir(self, folder: Path) -> bool:
        if folder not in self._frames_dirs:
            self._frames_dirs[folder] = folder.name != "" and recipe_for(folder, "frames") is not None
        return self._frames_dirs[folder]


def is_svd_output(path: Path) -> bool:
    return path in OwnOutputs()


def is_own_preview(path: Path) -> bool:
    """Whether `path` is a live preview svd wrote (its EXIF description is svd's mark)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return picture.format == "WEBP" and picture.getexif().get(EXIF_DESCRIPTION) == PREVIEW_MARK
    except (OSError, UnidentifiedImageError, ValueError):
        return False


EXIF_DESCRIPTION = 0x010E  # the EXIF tag ImageDescription


# --- claims: one process per output ------------------------------------------------------------------------


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{LOCK_MARK}")


def temp_path_for(final: Path) -> Path:
    """A hidden name in the same folder (one filesystem for the rename), naming this process, keeping the suffix."""
    return final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _alive(pid: int, started: float | None) -> bool:
    """Whether process `pid` (started at `started`, if known) still runs; a reused pid does not count, and
    neither does a zombie: a killed process its parent has not reaped yet (a Ray worker, for a while) holds
    nothing any more."""
    import psutil

    if pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        actual = process.create_time()
    except psutil.AccessDenied:  # another user's process: it runs, and its start time cannot be read
        return True
    except (psutil.Error, OSError):  # gone
        return False
    return started is None or abs(actual - started) < 1.0


def _holder(lock: Path) -> int | None:
    """The pid of the live process holding `lock` (0 if it is being written right now), or None if stale."""
    try:
        text = lock.read_text(encoding="ascii", errors="replace").split()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return 0  # cannot read it: leave it alone
    try:
        pid, started = int(text[0]), (float(text[1]) if len(text) > 1 else None)
    except (IndexError, ValueError):
        return 0 if age < LOCK_GRACE_SECONDS else None
    return pid if _alive(pid, started) else None


class Busy(Exception):
    """The output is being made by another live process."""

    def __init__(self, pid: int):
        super().__init__(pid)
        self.pid = pid

    def reason(self, output: Path) -> str:
        who = f"another svd process (pid {self.pid})" if self.pid else "another svd process"
        return f"{who} is making {output} right now; run again when it is done"


@contextlib.contextmanager
def claim(output: Path):
    """Hold `output` for this process while the body runs; raise Busy if a live process holds it.

    The lock file `.NAME.svd-lock` is created exclusively (O_CREAT | O_EXCL, on every OS) and holds this
    process's pid and start time. A lock whose process is gone (killed) is taken over. OSError from the
    folder (read-only, full, not a folder) propagates: it is the first write of the job.
    """
    lock = lock_path(output)
    created = make_folders(output.parent)
    me = f"{os.getpid()} {_start_time(os.getpid()) or ''}".strip()
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            if pid is not None:
                raise Busy(pid) from None
            _take_over(lock)
            continue
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(me)
        break
    else:
        raise Busy(0)
    try:
        remove_dead_partials(output)
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            lock.unlink()
        remove_empty_folders(created)  # a failed job leaves no folder of its own behind
        raise
    with contextlib.suppress(OSError):
        lock.unlink()


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones this call created (outermost first). If a part
    cannot be made (a file stands where a folder should), those already made are removed again."""
    missing = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    created: list[Path] = []
    try:
        for path in reversed(missing):
            existed = path.exists()  # a "name/.." part exists once "name" does
            path.mkdir(exist_ok=True)
            if not existed:
                created.append(path)
    except BaseException:
        remove_empty_folders(created)
        raise
    return created


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders `make_folders` created, innermost first, each only if it is still empty."""
    for path in reversed(created):
        with contextlib.suppress(OSError):
            path.rmdir()


def remove_dead_claim(output: Path) -> bool:
    """Remove the lock of `output` if the process holding it is gone (killed); return whether it was."""
    lock = lock_path(output)
    if not lock.exists() or _holder(lock) is not None:
        return False
    _take_over(lock)
    return not lock.exists()


def _take_over(stale: Path) -> None:
    """Move a dead process's lock out of the way; if a racing process had just replaced it, put it back."""
    aside = stale.with_name(f"{stale.name}-stale-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(stale, aside)
    except OSError:
        return
    if _holder(aside) not in (None, 0):
        with contextlib.suppress(OSError):
            os.replace(aside, stale)
        return
    with contextlib.suppress(OSError):
        aside.unlink()


def remove_dead_partials(output: Path) -> int:
    """Delete temporary files of `output` (and its sidecars) whose writing process is gone; return how many.

    Called only while holding the output's claim; a temporary file whose process is alive is never removed.
    """
    import glob

    removed = 0
    names = {output.name, output.name + ".json", output.name + ".frames.json"}
    for name in names:
        for p in output.parent.glob(f".{glob.escape(name)}{TEMP_MARK}*"):
            rest = p.name[len(name) + 1 + len(TEMP_MARK) :]
            pid = rest.split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or _alive(int(pid), None)):
                continue
            remove(p)
            removed += 1
    return removed


def remove(p: Path) -> None:
    """Delete one of svd's own temporary files or folders."""
    import shutil

    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
