"""Where svd keeps its own files: the built-in tiny model, benchmark calibration, the user config.

Downloaded checkpoints live in the Hugging Face cache (HF_HOME), shared with diffusers and the `hf` CLI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """`SVD_HOME` if set, else the platform's cache folder."""
    if env := os.environ.get("SVD_HOME"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "svd"


def user_config_dir() -> Path:
    """The folder that holds the user's `svd.toml`."""
    if env := os.environ.get("SVD_CONFIG_DIR"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "svd"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "svd"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "svd"
