"""Reading the text files svd is handed (recipes, sidecars, prompt lists, config files, stdin) within bounds.

A file named by the user may be anything: `/dev/zero`, a named pipe that never ends, gigabytes of one line, a
recipe of a hundred thousand nested arrays. Only regular files are read (stdin only when it was asked for with
`-`), never more than a stated number of bytes, and structured text no deeper than MAX_DEPTH; anything else is
a `BoundedReadError` whose text the caller puts after the file's name.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# A recipe, a sidecar or a config file is a few KiB; a prompt list or a list of files on stdin, one line each.
TEXT_LIMIT = 1 << 20  # 1 MiB
LIST_LIMIT = 10 << 20  # 10 MiB
MAX_DEPTH = 32  # of nested arrays and tables in a recipe or config file (svd writes at most 4)


class BoundedReadError(Exception):
    """Why a file was not read: its kind, its size, its encoding or its nesting."""


def read_text(path: Path, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes long."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise BoundedReadError("not a regular file (a folder, a device, a pipe or a socket)")
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise BoundedReadError(f"larger than {_size(limit)}, more than such a file ever holds")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BoundedReadError("not UTF-8 text") from None


def stdin_lines(lines: Iterable[str] | None = None, limit: int = LIST_LIMIT) -> list[str]:
    """The lines of `lines` (standard input when None, read in one bounded read: a line may be endless), refused
    past `limit` characters in all."""
    if lines is None:
        try:
            text = sys.stdin.read(limit + 1)
        except UnicodeDecodeError:
            raise BoundedReadError("not UTF-8 text") from None
        if len(text) > limit:
            raise BoundedReadError(f"more than {_size(limit)} of text")
        return text.splitlines()
    found, total = [], 0
    for line in lines:
        total += len(line)
        if total > limit:
            raise BoundedReadError(f"more than {_size(limit)} of text")
        found.append(line)
    return found


def load_json(text: str) -> Any:
    """JSON no deeper than MAX_DEPTH."""
    try:
        data = json.loads(text)
    except RecursionError:  # far deeper than MAX_DEPTH: the parser ran out of stack first
        raise BoundedReadError(f"nested more than {MAX_DEPTH} levels deep") from None
    return check_depth(data)


def check_depth(data: Any) -> Any:
    """`data` (parsed TOML, say) if it is no deeper than MAX_DEPTH."""
    if _depth(data) > MAX_DEPTH:
        raise BoundedReadError(f"nested more than {MAX_DEPTH} levels deep")
    return data


def _depth(data: Any) -> int:
    """How deep lists and dicts nest in `data` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return depth
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB"
