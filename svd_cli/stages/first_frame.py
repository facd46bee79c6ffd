"""The first-frame stage: the still a video starts from, at exactly the size the model will animate.

Its sources: an image file (or, from Python, a PIL image); a prompt, drawn by a text-to-image model; an
image file restyled by the same model's image-to-image pass. Each gives a `FirstFrame` whose record says
how it was made, for the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputImageError, OptionError, ref
from ..io.images import fit_image, flattened, is_portrait, open_image, open_mask, parse_color, same_aspect

# The preparation of an input picture (of any mode, transparency kept; named by its third argument in messages)
# for a video of a size that its model family asks for (session.py): the frame and what the recipe says of how it
# was made ({"recentred": True}), or None to fit it as any picture.
Prepare = Callable[[Image.Image, tuple[int, int], str], tuple[Image.Image, dict] | None]


@dataclass
class FirstFrame:
    picture: Image.Image | None  # RGB, the run's width x height (None while it waits on disk)
    record: dict  # what the recipe says about this stage
    notes: list[str]
    seconds: float = 0.0  # time it took to make
    path: Path | None = None  # where it waits between a batch's first-frame and animate phases
    # With a mask (a cinemagraph): per pixel of the picture, how much of the animation it shows (1: all of it,
    # 0: the picture's own pixel, exactly), float32 (height, width); see `fitted_mask`.
    mask: np.ndarray | None = None
    end: Image.Image | None = None  # the picture the video ends on (end), fitted like this one
    keyframes: list[Image.Image] = field(default_factory=list)  # the pictures after this one (keyframes), fitted

    def staged(self, path: Path) -> FirstFrame:
        """This frame written to `path` (lossless PNG) and let go of in memory, for a batch of many."""
        self.picture.save(path, format="PNG", compress_level=1)
        return FirstFrame(None, self.record, self.notes, self.seconds, path, self.mask, self.end, self.keyframes)

    def restored(self) -> FirstFrame:
        """The staged frame read back: the very pixels that were made."""
        with Image.open(self.path) as image:
            picture = image.convert("RGB")
        return FirstFrame(picture, self.record, self.notes, self.seconds, mask=self.mask, end=self.end,
                          keyframes=self.keyframes)  # fmt: skip

    def masked(
        self, mask: Path | None, source: str, source_size: tuple[int, int], fit: str, feather: int
    ) -> FirstFrame:
        """This frame with the weights of `mask` (a picture of `source`'s shape, `source_size`) fitted to it."""
        if mask is not None:
            self.mask = fitted_mask(mask, source, source_size, self.picture.size, fit, feather, self.notes)
        return self

    def through(self, pictures: list[Path], fit: str, background: str) -> FirstFrame:
        """This frame with the keyframes after it: each picture opened and fitted to it like the input."""
        for path in pictures:
            image, notes = open_image(Path(path), parse_color(background))
            self.notes += notes
            self.keyframes.append(fit_image(image, *self.picture.size, fit, parse_color(background)))
        self.record = {**self.record, "keyframes": [str(path) for path in pictures]}
        return self

    def ending(self, end: Path | None, source_size: tuple[int, int], fit: str, background: str) -> FirstFrame:
        """This frame with the picture at `end` (the video's last frame), fitted to it like the input."""
        if end is None:
            return self
        try:
            image, _ = open_image(Path(end), parse_color(background))
        except InputImageError as exc:  # the same end for every photo: one line ends the run
            raise OptionError("end", end, str(exc).removeprefix(f"{end}: ")) from None
        (width, height), (end_width, end_height) = source_size, image.size
        if not same_aspect((end_width, end_height), (width, height)):
            self.notes.append(f"{end} is {end_width}x{end_height}, another shape than the input's {width}x{height}: "
                              f"fitted the same way ({fit})")  # fmt: skip
        self.end = fit_image(image, *self.picture.size, fit, parse_color(background))
        self.record = {**self.record, "end": str(end)}
        return self


def target_size(asked: tuple[int, int] | None, model_size: tuple[int, int], image_size: tuple[int, int]):
    """The size asked for, else the model's default turned upright for portrait photos."""
    if asked:
        return tuple(asked)
    return tuple(model_size[::-1]) if is_portrait(image_size) else tuple(model_size)


def from_image(
    image: Image.Image, size: tuple[int, int], fit: str, background: str, source: dict, prepare: Prepare | None = None
) -> FirstFrame:
    """Fit an upright picture to `size`, its transparent pixels on `background`, unless `prepare` makes the frame."""
    record = {"stage": "first_frame", **source, "fit": fit, "background": background}
    if prepare is not None and (prepared := prepare(image, size, source.get("path", "the image"))) is not None:
        picture, how = prepared
        return FirstFrame(picture, record | how, [])
    colour = parse_color(background)
    return FirstFrame(fit_image(flattened(image, colour), size[0], size[1], fit, colour), record, [])


def without_background(image: Image.Image, remover, what: str) -> tuple[Image.Image, dict, str | None]:
    """The picture `what` with its background made transparent by `remover` (models/cutout.py), as Stability's SV3D
    script cuts an object out, what the recipe says of it, and a note; a picture with transparency is already cut
    out and is kept as it is (the script removes the background of an opaque picture only)."""
    if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
        return image, {}, f"{what} is cut out already (it has transparent pixels): its background is kept as it is"
    cut = remover.cut_out(image)
    low, high = cut.getchannel("A").getextrema()
    if high == 0:
        raise InputImageError(
            f"{what}: {remover.name} found no object in it (nothing is left after removing its background); give a "
            f"picture of one object on a plain background, or leave out {ref('remove_background')}."
        )
    if low == 255:
        return image, {}, f"{remover.name} found no background in {what}: the whole picture is kept"
    return cut, {"background_removed": {"model": remover.name, "sha256": remover.sha256}}, None


def drawing_size(drawn: tuple[int, int] | None, size: tuple[int, int]) -> tuple[int, int]:
    """The size a text-to-image model draws at for a video of `size`: its own (landscape, turned upright for
    portrait videos) when it has one, else the video's."""
    if not drawn:
        return tuple(size)
    return tuple(drawn[::-1]) if is_portrait(size) else tuple(drawn)


def from_prompt(model, prompt: str, image: dict, seed: int, size, fit: str, background: str, progress):
    """The still `model` (a TextToImageAdapter) draws for `prompt`, fitted to `size`.

    `image` holds the image model's settings for this run: negative_prompt, steps, cfg, size (drawn at).
    A prompt longer than the text encoder reads is cut there, with a note (the whole prompt is recorded).
    """
    tokens, limit = model.token_count(prompt), model.max_tokens
    if tokens > limit:
        progress.note(
            f"The prompt is {tokens} tokens and the text encoder reads the first {limit}: the rest is ignored "
            f"({prompt[:40]!r}...)."
        )
    drawn = drawing_size(image["size"], size)
    progress.start("image", total=image["steps"])
    picture = model.draw(prompt, image["negative_prompt"], image["steps"], image["cfg"], drawn, seed, progress)
    progress.end()
    record = {"source": "prompt", **_described(image, prompt), "seed": seed}
    if tokens > limit:
        record["tokens_read"] = limit
    return from_image(picture, size, fit, background, record)


def restyled(model, frame: FirstFrame, image: dict, seed: int, progress) -> FirstFrame:
    """`frame` (an input photo, already fitted) redrawn by `model`'s image-to-image pass towards the style."""
    prompt = ", ".join(t for t in (image["prompt"], image["style"]) if t)
    steps = image["steps"]
    progress.start("restyle", total=max(1, int(steps * image["style_strength"])))
    picture = model.restyle(frame.picture, prompt, image["negative_prompt"], steps, image["cfg"],
                            image["style_strength"], seed, progress)  # fmt: skip
    progress.end()
    if picture.size != frame.picture.size:  # the model rounds sizes to its latent grid
        picture = fit_image(picture, *frame.picture.size, "stretch", (0, 0, 0))
    record = {**frame.record, "source": "restyled_image_file", **_described(image, prompt), "seed": seed}
    return FirstFrame(picture.convert("RGB"), record, frame.notes, mask=frame.mask, end=frame.end)


def _described(image: dict, prompt: str) -> dict:
    keys = ("model", "negative_prompt", "steps", "cfg", "style", "style_strength", "size")
    return {"prompt": prompt, **{k: image[k] for k in keys if image.get(k) is not None}}


def from_file(
    path: Path,
    asked_size,
    model_size,
    fit: str,
    background: str,
    mask: Path | None = None,
    feather: int = 0,
    end: Path | None = None,
    prepare: Prepare | None = None,
) -> FirstFrame:
    """Decode an image file (EXIF-upright) and fit it (and its `mask` and `end` picture, if any), its transparent
    pixels on `background`, unless `prepare` makes the frame from it (transparency kept)."""
    image, notes = open_image(path, parse_color(background), keep_alpha=prepare is not None)
    size = target_size(asked_size, model_size, image.size)
    frame = from_image(image, size, fit, background, {"source": "image_file", "path": str(path)}, prepare)
    frame.notes = notes
    return frame.masked(mask, str(path), image.size, fit, feather).ending(end, image.size, fit, background)


def fitted_mask(
    path: Path,
    source: str,
    source_size: tuple[int, int],
    size: tuple[int, int],
    fit: str,
    feather: int,
    notes: list[str],
) -> np.ndarray | None:
    """The weights of the mask picture at `path` for a video of `size` made from `source` (`source_size`): fitted
    as the photo is (pad borders stay still), its edge feathered over `feather` pixels. A pixel `feather` or more
    away from every white one weighs exactly 0: the video shows the photo's own pixel there. None (with a note)
    for a mask that is white everywhere: the video is then plain animation."""
    try:
        mask = open_mask(Path(path))
    except InputImageError as exc:  # the same mask for every photo: one line ends the run
        raise OptionError("mask", path, str(exc).removeprefix(f"{path}: ")) from None
    (mask_width, mask_height), (width, height) = mask.size, source_size
    if not same_aspect((mask_width, mask_height), (width, height)):
        raise InputImageError(
            f"{ref('mask')} {path} is {mask_width}x{mask_height} and {source} is {width}x{height}: a mask needs its "
            f"photo's shape (any size of it); paint it over the photo, or scale it to {width}x{height}."
        )
    levels = np.asarray(fit_image(mask, *size, fit, 0), dtype=np.int64)
    weights = box_blurred(levels, feather) / 255.0
    if weights.max() == 0:
        raise InputImageError(
            f"{ref('mask')} {path} is black everywhere on {source}'s video (after fitting): nothing would move; "
            "paint white where the picture should move."
        )
    if weights.min() == 1:
        notes.append(f"{path} is white everywhere: every pixel may move, as without a mask")
        return None
    return weights.astype(np.float32)


def box_blurred(levels: np.ndarray, radius: int) -> np.ndarray:
    """Every value the mean of the (2 radius + 1)^2 values around it (borders repeated), in exact integer sums,
    so a window of equal values keeps its value exactly (no pixel far from the mask's edge moves off 0 or 1)."""
    if radius == 0:
        return levels.astype(np.float64)
    side = 2 * radius + 1
    sums = np.pad(np.pad(levels, radius, mode="edge").cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    window = sums[side:, side:] - sums[:-side, side:] - sums[side:, :-side] + sums[:-side, :-side]
    return window / float(side * side)
