"""The first-frame stage: the still a video starts from, at exactly the size the model will animate.

Today the still is an image file (or, from Python, a PIL image); a text-to-image model is the next source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..io.images import fit_image, is_portrait, open_image, parse_color


@dataclass
class FirstFrame:
    picture: Image.Image  # RGB, the run's width x height
    record: dict  # what the recipe says about this stage
    notes: list[str]


def target_size(asked: tuple[int, int] | None, model_size: tuple[int, int], image_size: tuple[int, int]):
    """The size asked for, else the model's default turned upright for portrait photos."""
    if asked:
        return tuple(asked)
    return tuple(model_size[::-1]) if is_portrait(image_size) else tuple(model_size)


def from_image(image: Image.Image, size: tuple[int, int], fit: str, background: str, source: dict) -> FirstFrame:
    """Fit an upright RGB picture to `size`."""
    picture = fit_image(image.convert("RGB"), size[0], size[1], fit, parse_color(background))
    record = {"stage": "first_frame", **source, "fit": fit, "background": background}
    return FirstFrame(picture, record, [])


def from_file(path: Path, asked_size, model_size, fit: str, background: str) -> FirstFrame:
    """Decode an image file (EXIF-upright, alpha on `background`) and fit it."""
    image, notes = open_image(path, parse_color(background))
    size = target_size(asked_size, model_size, image.size)
    frame = from_image(image, size, fit, background, {"source": "image_file", "path": str(path)})
    frame.notes = notes
    return frame
