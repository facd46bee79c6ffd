"""The checkpoints svd knows by name, read from `weights.toml`.

The file sits at the top of the source tree and is copied into the wheel as `svd_cli/weights.toml`,
so a name like `svd-xt` means the same thing in a checkout and in an installed package.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from .errors import SvdError
from .families import FAMILIES
from .kinds import KINDS, VIDEO, model_defaults

SAMPLERS = ("euler", "animatelcm")  # the samplers svd has (families/animatelcm.py, beside diffusers' Euler)


@dataclass(frozen=True)
class ModelEntry:
    """One named checkpoint: where it lives, what kind of model it is, and the defaults it brings."""

    name: str
    repo: str | None
    revision: str
    variant: str | None
    kind: str  # what it is for (kinds.py: VIDEO, text-to-image, upscaler, ...)
    family: str | None  # a video model's family (families/), which builds and runs it; None for the other kinds
    defaults: dict  # option name -> default value (the sampler too), over its family's or kind's own defaults
    download_gb: float
    gated: bool
    license: str
    description: str
    builtin: str | None = None
    fixed_conditioning: bool = False
    unet_repo: str | None = None  # a UNet that replaces the repo's (e.g. AnimateLCM's), one safetensors file
    unet_file: str | None = None
    file: str | None = None  # a single-file checkpoint in `repo` (Stability's own layout) instead of the folders
    # A file downloaded from this address instead of the Hub (`file` names it), checked against its publisher's MD5.
    url: str | None = None
    md5: str | None = None

    @property
    def frames(self) -> int | None:
        """Frames of a video model's videos; None for a text-to-image model."""
        return self.defaults.get("frames")

    @property
    def sampler(self) -> str:
        return self.defaults.get("sampler") or KINDS[self.kind]["sampler"]


def registry_path() -> Path:
    """The weights.toml in use: the packaged copy, else the one at the top of a source checkout."""
    packaged = Path(__file__).with_name("weights.toml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "weights.toml"


@cache
def load_registry() -> dict[str, ModelEntry]:
    path = registry_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SvdError(f"The model registry {path} is missing; reinstall svd (pip install svd-cli).") from None
    except tomllib.TOMLDecodeError as exc:
        raise SvdError(f"The model registry {path} is not valid TOML ({exc}); fix or restore it.") from None

    entries = {}
    for name, raw in data.get("models", {}).items():
        kind, family = _kind_and_family(raw, name)
        defaults = model_defaults(kind, family)
        for key in defaults:
            if key in raw:
                defaults[key] = _size(raw[key], name) if key == "size" else type(defaults[key])(raw[key])
        if "sampler" in defaults and defaults["sampler"] not in SAMPLERS:
            raise SvdError(f"weights.toml: models.{name}.sampler {defaults['sampler']!r} is not one of "
                           f"{', '.join(SAMPLERS)}.")  # fmt: skip
        entries[name] = ModelEntry(
            name=name,
            repo=raw.get("repo"),
            revision=raw.get("revision", "main"),
            variant=raw.get("variant"),
            kind=kind,
            family=family,
            defaults=defaults,
            download_gb=float(raw.get("download_gb", 0.0)),
            gated=bool(raw.get("gated", False)),
            license=raw.get("license", ""),
            description=raw.get("description", ""),
            builtin=raw.get("builtin"),
            fixed_conditioning=bool(raw.get("fixed_conditioning", False)),
            unet_repo=raw.get("unet_repo"),
            unet_file=raw.get("unet_file"),
            file=raw.get("file"),
            url=raw.get("url"),
            md5=raw.get("md5"),
        )
        if (entries[name].url is None) != (entries[name].md5 is None) or (entries[name].url and not raw.get("file")):
            raise SvdError(f"weights.toml: models.{name} names a url, an md5 and a file together or none of them; "
                           "fix the registry.")  # fmt: skip
    return entries


def _kind_and_family(raw: dict, name: str) -> tuple[str, str | None]:
    """An entry's kind, and its family if it is a video model (which must name one, as no other kind may)."""
    kind, family = raw.get("kind"), raw.get("family")
    if kind not in KINDS:
        raise SvdError(f"weights.toml: models.{name}.kind {kind!r} is not one of {', '.join(KINDS)}; fix the registry.")
    if kind == VIDEO and family not in FAMILIES:
        raise SvdError(f"weights.toml: models.{name}.family {family!r} is not one of {', '.join(FAMILIES)}; fix the "
                       "registry.")  # fmt: skip
    if kind != VIDEO and family is not None:
        raise SvdError(f"weights.toml: models.{name} is {kind!r}, which has no family; delete its family.")
    return kind, family


def _size(text: str, name: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise SvdError(f"weights.toml: models.{name}.size {text!r} is not WIDTHxHEIGHT; fix the registry.") from None
    return width, height


def get_entry(name: str) -> ModelEntry | None:
    return load_registry().get(name)


def model_names() -> list[str]:
    return list(load_registry())
