"""Settings from outside the command line: `SVD_<OPTION>` environment variables and `svd.toml` files.

Precedence, highest first: a flag, then its environment variable, then a config file, then the model's (or
svd's) default. Config files are read from the user config folder and then from `./svd.toml`; the working
folder's file wins. Keys are option names (`motion-bucket = 90` or `motion_bucket = 90`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import UsageError
from .paths import user_config_dir

CONFIG_NAME = "svd.toml"


def env_var(option: str) -> str:
    """'motion_bucket' -> 'SVD_MOTION_BUCKET'."""
    return "SVD_" + option.upper().replace("-", "_")


def config_files() -> list[Path]:
    """The config files that exist, lowest precedence first."""
    candidates = [user_config_dir() / CONFIG_NAME, Path.cwd() / CONFIG_NAME]
    seen, files = set(), []
    for p in candidates:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen and p.is_file():
            seen.add(key)
            files.append(p)
    return files


def load_config(allowed: set[str]) -> tuple[dict, dict[str, Path]]:
    """Merged values from the config files and, per key, the file it came from."""
    values: dict = {}
    origin: dict[str, Path] = {}
    for path in config_files():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot be read ({exc}); fix or remove it.") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML ({exc}); fix or remove it.") from None
        section = data.get("animate", data)
        for key, value in section.items():
            if isinstance(value, dict):
                continue
            name = key.replace("-", "_")
            if name not in allowed:
                raise UsageError(
                    f"{path}: unknown setting {key!r}; use option names such as model, memory, fps, "
                    "motion-bucket (see `svd animate --help`)."
                )
            values[name] = value
            origin[name] = path
    return values, origin


def effective_settings(options: list[tuple[str, str, str, object]]) -> list[dict]:
    """For each (flag, name, env var, default): the value `svd animate` would use and where it comes from."""
    values, origin = load_config({name for _, name, _, _ in options})
    rows = []
    for flag, name, env, default in options:
        if env and env in os.environ:
            value, source = os.environ[env], f"env {env}"
        elif name in values:
            value, source = values[name], f"config {origin[name]}"
        else:
            value, source = default, "default" if default is not None else "model default"
        rows.append({"option": flag, "value": value, "source": source})
    return rows
