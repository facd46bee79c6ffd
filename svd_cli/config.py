"""Settings from outside the command line: `SVD_<OPTION>` environment variables and `svd.toml` files.

Precedence, highest first: a flag, then its environment variable, then a config file, then the model's (or
svd's) default. Config files are read from the user config folder and then from `./svd.toml`; the working
folder's file wins. Keys are option names from the schema (`motion-bucket = 90` or `motion_bucket = 90`),
and values are checked like flags, with errors naming the file.

A working folder's file is somebody else's as often as yours (a downloaded project, a shared folder): it may
set how videos are made, but not the options the schema marks `local_config=False` (where outputs go and
what they replace, downloads, Ray, the watermark). Those it sets are ignored and named (`Config.ignored`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import OptionError, UsageError
from .io.bounded import BoundedReadError, check_depth, read_text
from .options import BY_NAME, OPTIONS, check, coerce
from .paths import user_config_dir

CONFIG_NAME = "svd.toml"


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


@dataclass
class Config:
    """Merged, checked values of the config files; per option, the file it came from; and the options a working
    folder's file set that only the user's own file may (ignored), with that file."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)
    ignored: dict[str, Path] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One sentence per ignored option, naming the file and where the option may be set instead."""
        return [
            f"{path}: ignoring {name.replace('_', '-')}: a working folder's svd.toml may not set where outputs go, "
            f"downloads, Ray or the watermark; set it in {user_config_dir() / CONFIG_NAME} or on the command line"
            for name, path in self.ignored.items()
        ]


def load_config() -> Config:
    """The config files' values (see `Config`); a bad file is a UsageError naming it."""
    config = Config()
    user_file = os.path.normcase(os.path.abspath(user_config_dir() / CONFIG_NAME))
    for path in config_files():
        trusted = os.path.normcase(os.path.abspath(path)) == user_file
        try:
            data = check_depth(tomllib.loads(read_text(path)))
        except BoundedReadError as exc:
            raise UsageError(f"{path}: {exc}; fix or remove it.", path=path) from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read ({exc}); fix or remove it.", path=path) from None
        except RecursionError:
            raise UsageError(f"{path}: nested too deeply to be a config file; fix or remove it.", path=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML ({exc}); fix or remove it.", path=path) from None
        section = data.get("animate", data)
        for key, value in section.items():
            if isinstance(value, dict):
                continue
            name = key.replace("-", "_")
            if name not in BY_NAME:
                raise UsageError(
                    f"{path}: unknown setting {key!r}; use option names such as model, memory, fps, motion-bucket "
                    "(see the animate options).",
                    path=path,
                    key=key,
                )
            opt = BY_NAME[name]
            try:
                parsed = coerce(opt, value)
                check(opt, parsed)
            except OptionError as exc:
                raise UsageError(f"{path}: {key} = {value!r}: {exc.message}", path=path, key=key) from None
            if not opt.local_config and not trusted:
                config.ignored[name] = path
                continue
            config.values[name] = parsed
            config.origin[name] = path
    return config


def effective_settings() -> list[dict]:
    """Each option's value for `svd animate` before flags, and where it comes from (env, config, default);
    an environment variable `svd animate` would refuse also has its `problem` (config files are checked on load)."""
    config = load_config()
    values, origin = config.values, config.origin
    rows = []
    for opt in OPTIONS:
        problem = None
        if opt.env_var in os.environ:
            value, source = os.environ[opt.env_var], f"env {opt.env_var}"
            try:  # checked as `svd animate` checks it, so the table never shows a value animate would refuse
                check(opt, coerce(opt, value))
            except OptionError as exc:
                problem = exc.message
        elif opt.name in values:
            value, source = values[opt.name], f"config {origin[opt.name]}"
        elif opt.from_model:
            value, source = None, "model default"
        else:
            value, source = (opt.default if opt.default is not None else opt.label()), "default"
        rows.append({"name": opt.name, "value": value, "source": source} | ({"problem": problem} if problem else {}))
    return rows
