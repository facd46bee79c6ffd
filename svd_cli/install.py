"""Whether the packages svd computes with import together: a broken install is named as such.

The usual break is a torch upgraded without its torchvision (torchvision's compiled operators then do not load:
"operator torchvision::nms does not exist"). transformers and spandrel import torchvision while a model loads,
so without this check the failure would surface as a model that "could not be loaded", with advice (download
it again) that cannot help.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import metadata

from .errors import InstallError, first_line

# In the order they depend on each other: the first that fails is the one to fix.
PACKAGES = ("torch", "torchvision", "transformers", "diffusers")
FIX = (
    "reinstall torch and torchvision together, from one release pair (svd's CI uses torch 2.14.1 with torchvision "
    "0.29.1), e.g. pip install torch==2.14.1 torchvision==0.29.1, then run `svd doctor`"
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def install_problems() -> list[str]:
    """One sentence per package that does not import, with its own error and the fix (empty when all do)."""
    problems = []
    for package in PACKAGES:
        try:
            importlib.import_module(package)
        except Exception as exc:  # an ImportError, or a compiled extension's RuntimeError/OSError at import
            problems.append(
                f"the installed {package} {_version(package)} does not import ({type(exc).__name__}: "
                f"{first_line(exc, 'no details')[:300]}): the Python environment is broken, not the model; {FIX}"
            )
    return problems


@cache
def check_install() -> None:
    """Raise InstallError naming the first package that does not import (checked once per process)."""
    problems = install_problems()
    if problems:
        raise InstallError(problems[0][0].upper() + problems[0][1:] + ".", packages=PACKAGES)
