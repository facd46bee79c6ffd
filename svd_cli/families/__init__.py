"""Video model families (base.py says what one is), by the name registry entries give as `family`.

Adding a family: its module here and one entry in `FAMILIES` (a script or a test may add one at run time).
"""

from __future__ import annotations

from typing import Any

from .base import Conditioning, Family
from .sv3d import SV3D, SV3DP
from .svd import SVD

__all__ = ["FAMILIES", "Conditioning", "Family", "family_of", "family_reading"]

FAMILIES: dict[str, Family] = {"svd": SVD(), "sv3d": SV3D(), "sv3d-p": SV3DP()}


def family_of(model: Any) -> Family:
    """The family of a loaded video model (its adapter's `family`)."""
    return FAMILIES[model.family]


def family_reading(pipeline: str) -> Family | None:
    """The family whose diffusers pipeline class is named `pipeline` (model_index.json's `_class_name`), if any."""
    return next((family for family in FAMILIES.values() if pipeline in family.pipelines), None)
