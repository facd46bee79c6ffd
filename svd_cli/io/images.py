"""Reading a user's photo into the RGB picture the model conditions on.

Photos arrive in every shape: rotated by EXIF, with alpha, 16-bit, CMYK, palette, animated, enormous,
broken. Each either becomes an upright RGB image of the requested size or raises `InputImageError` with
one sentence naming the file and the problem.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from ..errors import InputImageError, OptionError

FITS = ("crop", "pad", "stretch")
# Larger images are refused before any pixel is decoded (a decompression bomb is only a header).
MAX_PIXELS = 120_000_000

_heif_registered = False


def register_optional_formats() -> None:
    """HEIC/HEIF when the optional `pillow-heif` package is installed (pip install "svd-cli[heic]")."""
    global _heif_registered
    if _heif_registered:
        return
    _heif_registered = True
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def image_extensions() -> set[str]:
    """Extensions Pillow can open here: what a folder scan treats as images."""
    register_optional_formats()
    return {ext.lower() for ext in Image.registered_extensions()}


def parse_color(value: str) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise OptionError(
            "background", value, "not a colour; use a name (white, black) or a hex value like #ffffff.",
            shown=repr(value),
        ) from None  # fmt: skip
    return rgb[:3]


def open_image(
    path: Path, background: tuple[int, int, int] = (255, 255, 255), *, keep_alpha: bool = False
) -> tuple[Image.Image, list[str]]:
    """Decode `path` to an upright 8-bit RGB image (RGBA with `keep_alpha`, when it has transparency); also return
    notes worth telling the user."""
    image, notes = _read_upright(path)
    try:
        return _to_rgb(image, background, keep_alpha), notes
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: the image data is truncated or corrupt ({exc}).") from None


def open_mask(path: Path) -> Image.Image:
    """Decode a mask picture to upright 8-bit greyscale (white: may move): its alpha channel when it has a
    transparent pixel, else its brightness."""
    image, _ = _read_upright(path)
    try:
        if image.mode == "P" and "transparency" in image.info or image.mode in ("LA", "La", "PA"):
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "RGBa") and image.getchannel("A").getextrema()[0] < 255:
            return image.getchannel("A")
        return _to_rgb(image, (0, 0, 0)).convert("L")
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: the image data is truncated or corrupt ({exc}).") from None


def _read_upright(path: Path) -> tuple[Image.Image, list[str]]:
    """Decode `path` as it is shown (EXIF rotation applied, first frame of an animation), in its own mode."""
    register_optional_formats()
    notes: list[str] = []
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputImageError(f"{path}: file not found.") from None
    except PermissionError:
        raise InputImageError(f"{path}: permission denied; check the file's permissions.") from None
    if not path.is_file():  # a pipe or a device reports size 0 and may never end: read nothing from it
        raise InputImageError(f"{path}: not a regular file (a pipe, a device or a socket); give a picture file.")
    if size == 0:
        raise InputImageError(f"{path}: the file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except PermissionError:
        raise InputImageError(f"{path}: permission denied; check the file's permissions.") from None
    except Image.DecompressionBombError:
        raise InputImageError(_too_large(path, "its header declares")) from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image Pillow can read (unknown format or corrupt header).") from None
    except OSError as exc:
        raise InputImageError(f"{path}: cannot be read ({exc}).") from None

    with im:
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise InputImageError(_too_large(path, f"{width}x{height} is {width * height / 1e6:.0f} MP,"))
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"{path.name}: animated image, using its first frame")
            im.seek(0)
        try:
            im.load()
            upright = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputImageError(f"{path}: the image data is truncated or corrupt ({exc}).") from None
    return upright, notes


def _too_large(path: Path, what: str) -> str:
    return (
        f"{path}: {what} more than the {MAX_PIXELS / 1e6:.0f} megapixels svd accepts (a decompression bomb "
        "looks like this); downscale the image first."
    )


def flattened(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """An upright picture of any mode as 8-bit RGB, its transparent pixels on `background`."""
    return _to_rgb(image, background)


def _to_rgb(im: Image.Image, background: tuple[int, int, int], keep_alpha: bool = False) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white.
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype("uint8"), "L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        if keep_alpha:
            return im.convert("RGBA")
        flat = Image.new("RGB", im.size, background)
        flat.paste(im, mask=im.getchannel("A"))
        return flat
    if im.mode == "CMYK":
        # Pillow's CMYK->RGB ignores colour profiles; Adobe JPEGs store inverted CMYK, which this handles.
        return im.convert("RGB")
    return im.convert("RGB")


def fit_image(
    image: Image.Image, width: int, height: int, fit: str, background: tuple[int, int, int] | int
) -> Image.Image:
    """Bring `image` to exactly width x height: centre-crop, letterbox-pad (with `background`, a grey level for
    a greyscale image) or stretch."""
    if fit not in FITS:
        raise OptionError("fit", fit, f"choose one of {', '.join(FITS)}.", allowed=FITS)
    if image.size == (width, height):
        return image
    if fit == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if fit == "crop":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=background, centering=(0.5, 0.5))


def same_aspect(size: tuple[int, int], other: tuple[int, int]) -> bool:
    """Whether two (width, height) sizes have the same shape, within 1 % (a mask scaled from its photo rounds)."""
    return abs(size[0] * other[1] - size[1] * other[0]) <= 0.01 * size[1] * other[0]


def is_portrait(size: tuple[int, int]) -> bool:
    width, height = size
    return height > width


def upright_size(path: Path) -> tuple[int, int] | None:
    """Width and height as shown (EXIF rotation applied), read from the header alone; None if unreadable.

    The resume check needs only this, so a rerun over a thousand finished photos decodes none of them.
    """
    register_optional_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                orientation = im.getexif().get(0x0112, 1)
    except Exception:  # whatever is wrong with the file, run_one reports it properly
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
