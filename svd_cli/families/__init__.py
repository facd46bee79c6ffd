"""Model families (base.py says what one is), by the name registry entries and model folders give as `kind`.

Adding a family: its module here and one entry in `FAMILIES`.
"""

from __future__ import annotations

from typing import Any

from .base import Conditioning, Family
from .svd import SVD

__all__ = ["FAMILIES", "Conditioning", "Family", "family_of"]

FAMILIES: dict[str, Family] = {"svd": SVD()}


def family_of(model: Any) -> Family:
    """The family of a loaded model (its adapter's `kind`)."""
    return FAMILIES[model.kind]
