"""The first-frame stage: the still a video starts from, at exactly the size the model will animate.

Its sources: an image file (or, from Python, a PIL image); a prompt, drawn by a text-to-image model; an
image file restyled by the same model's image-to-image pass. Each gives a `FirstFrame` whose record says
how it was made, for the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..io.images import fit_image, is_portrait, open_image, parse_color


@dataclass
class FirstFrame:
    picture: Image.Image | None  # RGB, the run's width x height (None while it waits on disk)
    record: dict  # what the recipe says about this stage
    notes: list[str]
    seconds: float = 0.0  # time it took to make
    path: Path | None = None  # where it waits between a batch's first-frame and animate phases

    def staged(self, path: Path) -> FirstFrame:
        """This frame written to `path` (lossless PNG) and let go of in memory, for a batch of many."""
        self.picture.save(path, format="PNG", compress_level=1)
        return FirstFrame(None, self.record, self.notes, self.seconds, path)

    def restored(self) -> FirstFrame:
        """The staged frame read back: the very pixels that were made."""
        with Image.open(self.path) as image:
            picture = image.convert("RGB")
        return FirstFrame(picture, self.record, self.notes, self.seconds)


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
    return FirstFrame(picture.convert("RGB"), record, frame.notes)


def _described(image: dict, prompt: str) -> dict:
    keys = ("model", "negative_prompt", "steps", "cfg", "style", "style_strength", "size")
    return {"prompt": prompt, **{k: image[k] for k in keys if image.get(k) is not None}}


def from_file(path: Path, asked_size, model_size, fit: str, background: str) -> FirstFrame:
    """Decode an image file (EXIF-upright, alpha on `background`) and fit it."""
    image, notes = open_image(path, parse_color(background))
    size = target_size(asked_size, model_size, image.size)
    frame = from_image(image, size, fit, background, {"source": "image_file", "path": str(path)})
    frame.notes = notes
    return frame
