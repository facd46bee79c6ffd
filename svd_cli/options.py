"""The option schema: every `svd animate` setting, declared once.

The command line (flags, help, `SVD_<NAME>` variables), `svd.toml`, `svd config show`, the recipe sidecar
(written and replayed), the library API and validation are all generated from `OPTIONS`. Adding a setting
means adding an `Option` here and using it where it matters; nothing else lists options by hand.

A value of None means "not given": the model's default (`from_model`), else the option's `default`.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionError, UsageError, ref
from .families import FAMILIES
from .families.sv3d import orbit_azimuths
from .kinds import DRAFT_DECODER, VIDEO, model_defaults
from .memory.profiles import MEMORY_CHOICES
from .registry import SAMPLERS, get_entry

MAX_SEED = 2**63 - 1
RANDOM_SEEDS = 2**31  # a seed drawn for the user is below this: short to read back and to type again
MAX_VARIATIONS = 1000
SIZE_RANGE = (64, 4096)
SIZE_STEP = 64  # sides are multiples of this: 8x8 latent cells, every UNet level aligned
TEMPLATE_FIELDS = ("stem", "seed", "index", "model", "fps", "frames", "prompt")
# The names of the enumerated settings, written once, here at the bottom of the layers: the modules that act
# on them (which bring torch and ffmpeg) import these lists, and the schema below needs none of those modules.
# The sampler names are registry.SAMPLERS: the registry checks the ones weights.toml gives too.
DTYPES = ("auto", "fp16", "bf16", "fp32")
FORMATS = ("mp4", "gif", "webm", "frames")
LOOPS = ("bounce", "crossfade", "motion")  # the loop modes; "off" is the option's default
MOTION_LOOP = "motion"  # sampled from both ends on the same picture (the end option's sampler), last frame dropped
WEIGHT_STORAGE = ("full", "fp8")  # how the UNet's weights are kept (memory/storage.py applies it)


# --- value forms that need more than int()/float() -------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """'1024x576' -> (1024, 576)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text or ""))
    if not m:
        raise OptionError("size", text, "write it as WIDTHxHEIGHT, e.g. 1024x576.", shown=repr(text))
    return int(m.group(1)), int(m.group(2))


def check_size(size: tuple[int, int]) -> None:
    lo, hi = SIZE_RANGE
    for what, n in zip(("width", "height"), size, strict=True):
        if isinstance(n, bool) or not isinstance(n, int) or n % SIZE_STEP or not lo <= n <= hi:
            raise OptionError(
                "size",
                size,
                f"the {what} {n} must be a multiple of 64 between {lo} and {hi} (SVD works in 8x8 latent pixels, "
                "64-pixel steps keep every layer aligned), e.g. 1024x576.",
                allowed=SIZE_RANGE,
                shown=f"{size[0]}x{size[1]}",
            )


def parse_degrees(name: str, example: str) -> Callable[[Any], list[float]]:
    """Angles in degrees, separated by commas (text), or a number or list of numbers (Python, a recipe)."""

    def parse(value: Any) -> list[float]:
        parts = value if isinstance(value, list | tuple) else str(value).replace(" ", "").split(",")
        try:
            if any(isinstance(part, bool) for part in parts):
                raise TypeError
            angles = [float(part) for part in parts]
        except (TypeError, ValueError):
            raise OptionError(name, value, f"write degrees separated by commas, e.g. {example}.",
                              shown=repr(value)) from None  # fmt: skip
        if not angles or not all(math.isfinite(angle) for angle in angles):
            raise OptionError(name, value, f"write finite degrees separated by commas, e.g. {example}.",
                              shown=repr(value))  # fmt: skip
        return angles

    return parse


def check_elevation(elevations: list[float]) -> None:
    if not all(-90 <= e <= 90 for e in elevations):
        raise OptionError("elevation", elevations, "each elevation must be between -90 and 90 degrees.",
                          shown=shown_value(elevations))  # fmt: skip


def parse_azimuths(value: Any) -> list[float]:
    """A count N (N views evenly round, as Stability's script makes them) or one azimuth per frame in degrees."""
    angles = parse_degrees("azimuths", "21 or 0,90,180,270")(value)
    if len(angles) == 1:  # a count, not one angle
        count = angles[0]
        if not (count.is_integer() and 2 <= count <= 128):
            raise OptionError("azimuths", value, "give a count of views (2-128, e.g. 21) or one angle per frame in "
                              "degrees, separated by commas.", shown=repr(value))  # fmt: skip
        return orbit_azimuths(int(count))
    return angles


def random_seed() -> int:
    """A seed for a video the user gave none for (from the OS's randomness: independent of torch's state)."""
    return random.SystemRandom().randrange(RANDOM_SEEDS)


def parse_seeds(text: Any) -> list[int]:
    if isinstance(text, list | tuple):
        return list(text)  # check_seeds checks each is a seed
    parts = str(text).replace(" ", "").split(",")
    if parts == [""]:
        return []  # check_seeds asks for at least one
    try:
        seeds = [int(part) for part in parts]  # an empty part ("1,,2") is a typo, not a seed: int("") refuses it
    except ValueError:
        raise OptionError(
            "seeds", text, "write whole numbers separated by commas, e.g. 1,2,3.", shown=repr(text)
        ) from None
    return seeds


def check_seeds(seeds: list[int]) -> None:
    if not seeds:
        raise OptionError("seeds", seeds, "give at least one seed, e.g. 1,2,3.", shown="")
    shown = ",".join(str(s) for s in seeds)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise OptionError("seeds", seeds, f"a seed must be between 0 and {MAX_SEED}.", shown=shown)
    if len(set(seeds)) != len(seeds):
        raise OptionError("seeds", seeds, "a seed appears twice; each seed makes one video.", shown=shown)


def parse_loras(value) -> list[tuple[str, float]]:
    """'style.safetensors:0.8' (or a list of such) -> [('style.safetensors', 0.8)]; the scale defaults to 1.

    The scale is what follows the last colon if it is a number, so Windows paths (C:\\x.safetensors) work.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    loras = []
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 2:  # already parsed (Python callers, recipes)
            item = f"{item[0]}:{item[1]}"
        if not isinstance(item, str) or not item.strip():
            raise OptionError("lora", item, "write it as PATH or PATH:SCALE, e.g. style.safetensors:0.8.",
                              shown=repr(item))  # fmt: skip
        path, _, scale = item.rpartition(":")
        try:
            loras.append((path, float(scale)) if path and "/" not in scale and "\\" not in scale else (item, 1.0))
        except ValueError:
            if Path(path).is_file() and not Path(item).exists():  # the file is there: the scale is what is wrong
                raise OptionError("lora", item, f"the scale {scale!r} of {path} is not a number; write PATH:SCALE, "
                                  "e.g. style.safetensors:0.8.", shown=item) from None  # fmt: skip
            loras.append((item, 1.0))
    for path, scale in loras:
        if not -10.0 <= scale <= 10.0:
            raise OptionError("lora", value, f"the scale {scale} of {path} must be between -10 and 10.",
                              shown=f"{path}:{scale}")  # fmt: skip
    return loras


def check_background(value: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except (ValueError, AttributeError):
        raise OptionError(
            "background", value, "not a colour; use a name (white, black) or a hex value like #ffffff.",
            shown=repr(value),
        ) from None  # fmt: skip


def check_text(name: str) -> Callable[[str], None]:
    """A check that a text setting (a prompt, a style) says something."""

    def check_not_empty(value: str) -> None:
        if not value.strip():
            raise OptionError(name, value, "is empty; describe the picture in words.", shown=repr(value))

    return check_not_empty


# What a field of a name template may hold: a number field takes a width with optional zero padding
# ({seed:05d}, {index:03}), a text field a width with optional fill and alignment ({stem:_<20}). Anything else
# (precision, %, conversions, attribute access) only makes odd file names or fails halfway through a batch.
NUMBER_FIELDS = ("seed", "index", "fps", "frames")
_NUMBER_SPEC = re.compile(r"(?:[-_0-9A-Za-z]?[<>^=])?0?(?:[1-9]\d{0,2})?d?")
_TEXT_SPEC = re.compile(r"(?:[-_0-9A-Za-z]?[<>^])?(?:[1-9]\d{0,2})?s?")


def _template_fields(template: str) -> list[tuple[str, str | None, str]]:
    """(literal text, field or None, format spec) of each piece of a name template, refused if it is malformed."""
    import string

    def refuse(problem: str):
        return OptionError("name", template, problem, shown=repr(template))

    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise refuse(f"not a valid template ({exc}).") from None
    fields = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    parsed = []
    for literal, field, spec, conversion in pieces:
        if field is None:
            parsed.append((literal, None, ""))
            continue
        written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field not in TEMPLATE_FIELDS:
            plain = re.match(r"[A-Za-z_]*", field).group()
            if plain in TEMPLATE_FIELDS:
                raise refuse(f"{written}: a field is a plain name, without . or [ ]; write {{{plain}}}.")
            raise refuse(f"unknown field {{{field}}}; use {fields}.")
        if conversion:
            raise refuse(f"{written}: conversions (!r, !s, !a) are not allowed; write {{{field}}}.")
        if field in NUMBER_FIELDS and not _NUMBER_SPEC.fullmatch(spec):
            raise refuse(f"{written}: a number field takes only a width, zero-padded or not, e.g. {{{field}:03}}.")
        if field not in NUMBER_FIELDS and not _TEXT_SPEC.fullmatch(spec):
            raise refuse(f"{written}: a text field takes only a width and alignment, e.g. {{{field}:_<20}}.")
        parsed.append((literal, field, spec))
    return parsed


def check_template(template: str) -> None:
    if not template.strip():
        raise OptionError("name", template, "is empty; give a name template such as {stem}-{seed}.",
                          shown=repr(template))  # fmt: skip
    _template_fields(template)
    if "/" in template or "\\" in template or template.strip() in ("", ".", "..") or ".." in template:
        raise OptionError(
            "name", template,
            f"a name may not contain path separators or '..' (it would escape the output folder); use {ref('out')} "
            "to choose the folder.",
            shown=repr(template),
        )  # fmt: skip


def fill_template(template: str, values: Mapping[str, Any]) -> str:
    """A checked name template with its fields filled; a number not known yet (None) is left out."""
    text = ""
    for literal, field, spec in _template_fields(template):
        text += literal
        if field is not None and values[field] is not None:
            text += format(values[field], spec)
    return text


# --- the schema ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting of `svd animate`."""

    name: str  # Python name; the flag is --name-with-dashes, the variable SVD_NAME
    type: type  # int, float, str or bool: what the value is once parsed
    help: str
    default: Any = None  # used when neither the user nor the model gives a value
    from_model: bool = False  # None means the model's default (weights.toml, or the model kind's)
    choices: tuple | None = None
    range: tuple | None = None
    parse: Callable[[str], Any] | None = None  # text (flag, variable, config string) -> value
    check: Callable[[Any], None] | None = None  # extra validation of a parsed value
    recipe: str | None = None  # where the recipe records it ("settings.fps"); None: not recorded
    short: str | None = None  # a one-letter flag
    negatable: bool = False  # a --x/--no-x pair with three states (None, True, False)
    default_label: str | None = None  # what `svd config show` says when nothing is set
    example: str = ""  # a valid, non-default value as a user would type it
    cli_only: bool = False  # about the terminal (output mode), not the work: no config file, no library
    multiple: bool = False  # the flag may be given several times; the value is a list
    # Whether a working folder's svd.toml may set it. Not for what sends work or data elsewhere, downloads, or
    # decides what is written where (or unmarked): a folder you cd into must not choose those for you.
    local_config: bool = True
    # Whether the recipe records it at its default too (False: only when set otherwise, so a lever added after
    # recipes existed leaves the recipes of runs without it as they were; a recipe without it replays the default).
    recorded_at_default: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return env_var(self.name)

    def label(self) -> str:
        """The value `svd config show` reports when nothing sets this option."""
        if self.default_label is not None:
            return self.default_label
        return "the model's" if self.from_model else str(self.default)


def env_var(name: str) -> str:
    """'motion_bucket' -> 'SVD_MOTION_BUCKET'."""
    return "SVD_" + name.upper().replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("model", str, "A model name (svd, svd-xt, svd-xt-1.1, tiny), a local diffusers folder, or a Hub repo id.",
           default="svd-xt", recipe="model", short="m", example="tiny"),
    Option("prompt", str, "Make the first frame from this text with the image model instead of an input image "
           "(with style: what the restyled photo shows).", check=check_text("prompt"), recipe="image.prompt",
           short="p", default_label="", example="a red fox in fresh snow, golden hour"),
    Option("prompts", Path, "A text file with one prompt per line (blank lines and # comments skipped): one "
           "video each; - reads the prompts from stdin.", default_label="", example="prompts.txt"),
    Option("style", str, "Restyle each input photo with the image model before animating it, e.g. 'watercolor "
           "painting'.", check=check_text("style"), recipe="image.style", default_label="",
           example="watercolor painting"),
    Option("style_strength", float, "0-1: how much of the photo the style redraws (more: less of the photo "
           "survives).", default=0.5, range=(0.0, 1.0), recipe="image.style_strength", example="0.6"),
    Option("image_model", str, "The text-to-image model for prompt and style: a name (sdxl-turbo, tiny-t2i), "
           "a local diffusers folder, or a Hub repo id.", default="sdxl-turbo", recipe="image.model",
           example="tiny-t2i"),
    Option("negative_prompt", str, "What the first frame should not show (used when image_cfg > 1).",
           recipe="image.negative_prompt", default_label="", example="blurry, text"),
    Option("image_steps", int, "Denoising steps of the first frame [default: the image model's, 4 for "
           "sdxl-turbo].", range=(1, 200), recipe="image.steps", default_label="the image model's", example="3"),
    Option("image_cfg", float, "Guidance scale of the first frame [default: the image model's, 0 for sdxl-turbo].",
           range=(0.0, 30.0), recipe="image.cfg", default_label="the image model's", example="1.5"),
    Option("frames", int, "Frames to generate, 2-128 [default: the model's, from weights.toml].", from_model=True,
           range=(2, 128), recipe="settings.frames", example="6"),
    Option("fps", int, "3-30: the fps the model is conditioned on and the video's frame rate [default: the model's].",
           from_model=True, range=(3, 30), recipe="settings.fps", example="8"),
    Option("motion_bucket", int, "0-255: amount of motion [default: the model's, 127].", from_model=True,
           range=(0, 255), recipe="settings.motion_bucket", example="90"),
    Option("noise_aug", float, "Noise added to the conditioning image; more gives more motion, less likeness "
           "[default: the model's, 0.02].", from_model=True, range=(0.0, 1.0), recipe="settings.noise_aug",
           example="0.05"),
    Option("steps", int, "Denoising steps [default: the model's].", from_model=True, range=(1, 200),
           recipe="settings.steps", example="2"),
    Option("sampler", str, "euler (SVD's own) or animatelcm (the consistency sampler for AnimateLCM UNets, 1-8 "
           "steps) [default: the model's].", from_model=True, choices=SAMPLERS,
           recipe="settings.sampler", example="animatelcm"),
    Option("cache", int, "Feature reuse (DeepCache): every Nth denoising step runs the whole UNet and the steps "
           "between reuse its deep features, running only its outer layers; 1 is off, 3 is the authors' choice "
           "for SVD's 25 Euler steps (faster, some detail lost; with animatelcm's few steps each reused step is a "
           "bigger share).", default=1, range=(1, 10), recipe="settings.cache", example="3", recorded_at_default=False),
    Option("min_cfg", float, "Guidance scale of the first frame [default: the model's, 1.0].", from_model=True,
           range=(0.0, 30.0), recipe="settings.min_cfg", example="1.5"),
    Option("max_cfg", float, "Guidance scale of the last frame [default: the model's, 3.0].", from_model=True,
           range=(0.0, 30.0), recipe="settings.max_cfg", example="2.5"),
    Option("elevation", list, "sv3d-p's camera elevation in degrees: one for every frame, or one per frame "
           "separated by commas [default: 10, Stability's script's].", parse=parse_degrees("elevation", "20"),
           check=check_elevation, recipe="settings.elevation", default_label="the model's", example="20",
           recorded_at_default=False),
    Option("azimuths", list, "sv3d-p's camera azimuths: a count N for N views evenly round the object, or one "
           "angle per frame in degrees, separated by commas; the last frame is the input view [default: 21 evenly "
           "round, Stability's script's].", parse=parse_azimuths, recipe="settings.azimuths",
           default_label="the model's", example="0,90,180,270", recorded_at_default=False),
    Option("seed", int, "Random seed [default: a new random seed, printed and recorded].", range=(0, MAX_SEED),
           recipe="settings.seed", default_label="random", example="7"),
    Option("seeds", list, "Several seeds, one video each: 1,2,3.", parse=parse_seeds, check=check_seeds,
           default_label="", example="1,2"),
    Option("variations", int, "N videos per image with consecutive seeds: from seed, else from one derived from the "
           "image's file name (or the prompt), so the same command again finishes the set instead of adding to it.",
           range=(1, MAX_VARIATIONS), default_label="", example="2"),
    Option("size", tuple, "WIDTHxHEIGHT, multiples of 64 [default: the model's, 1024x576; portrait inputs get "
           "576x1024].", from_model=True, parse=parse_size, check=check_size, recipe="settings.size",
           example="256x128"),
    Option("unet", Path, "A fine-tuned SVD UNet over the model's other components: a diffusers folder or a "
           "safetensors file (diffusers or Stability layout).", recipe="model.unet.path", default_label="the model's",
           example="unet.safetensors"),
    Option("lora", list, "LoRA weights for the UNet, PATH or PATH:SCALE (scale 1 by default); repeat for several.",
           parse=parse_loras, recipe="model.lora", default_label="", example="lora.safetensors:0.5", multiple=True),
    Option("fit", str, "How the image fills the size: crop (centred), pad or stretch.", default="crop",
           choices=("crop", "pad", "stretch"), recipe="settings.fit", example="pad"),
    Option("background", str, "Colour behind transparent pixels and pad borders.", default="white",
           check=check_background, recipe="settings.background", example="black"),
    Option("remove_background", bool, "SV3D: cut the object out of an opaque photo first, as Stability's script "
           "does (U^2-Net through rembg: pip install \"svd-cli[rembg]\"), then centre it on white.", default=False,
           recipe="settings.remove_background", example="true", recorded_at_default=False),
    Option("background_remover", str, "The model remove_background cuts out with: a name (u2net, tiny-u2net) or an "
           ".onnx file with U^2-Net's input and output.", default="u2net", recipe="settings.background_remover",
           example="tiny-u2net", recorded_at_default=False),
    Option("end", Path, "End the video on this picture (fitted like the input): the model samples from both ends "
           "(ViBiD, two guided passes a step); the input itself gives a loop by motion. Guidance: min_cfg is the "
           "pass from the input, max_cfg the pass from the end [default: 1.0 each, the authors'].",
           recipe="input.end.path", default_label="", example="end.png", local_config=False),
    Option("keyframes", bool, "One video through every input picture in order (a folder's in name order): a "
           "segment from each to the next, sampled from both ends as end does; frames shared once.", default=False,
           recipe="settings.keyframes", example="true", recorded_at_default=False),
    Option("mask", Path, "A cinemagraph: a picture of the photo's shape, white where it may move, black where it stays "
           "still (grey: partly; an alpha channel works too); every pixel outside it stays the photo's.",
           recipe="input.mask.path", default_label="", example="mask.png", local_config=False),
    Option("masks", Path, "A folder of masks for a folder of photos: each photo's is the picture of its name there "
           "(lake.jpg: lake.png), in the same sub-folder with recursive; the folder is never taken for photos.",
           default_label="", example="masks/", local_config=False),
    Option("mask_feather", int, "Pixels over which the mask's edge blends the region it marks into the pixels kept.",
           default=4, range=(0, 64), recipe="settings.mask_feather", example="8", recorded_at_default=False),
    Option("extend", int, "Make N more clips, each animated from the last frame of the one before, into one longer "
           "video (frames + N x (frames - 1)); finished clips are kept, so a rerun after an interruption continues.",
           default=0, range=(0, 100), recipe="settings.extend", example="1"),
    Option("color_match", bool, "Match each extended clip's colours to the first clip's (chained clips drift in "
           "colour and contrast) [default: on].", default=True, negatable=True, recipe="settings.color_match",
           example="false"),
    Option("loop", str, "Make the video loop: bounce (forward, then backward), crossfade (the tail blends into the "
           "head over loop_frames frames) or motion (sampled to end on its first frame, as end does with the input).",
           default="off", choices=("off", *LOOPS),
           recipe="settings.loop", example="bounce"),
    Option("loop_frames", int, "Frames the crossfade loop blends over.", default=4, range=(1, 64),
           recipe="settings.loop_frames", example="2"),
    Option("upscale", int, "2: double the width and height of every frame with a super-resolution model.", default=1,
           choices=(1, 2), recipe="settings.upscale", example="2"),
    Option("upscaler", str, "The super-resolution model for upscale: a name (realesrgan-x2, tiny-upscaler) or a "
           ".safetensors file.", default="realesrgan-x2", recipe="settings.upscaler", example="tiny-upscaler"),
    Option("interpolate", int, "2-4: that many times the frame rate, with motion-compensated in-between frames: "
           "(F-1)xN+1 frames, the same motion from first to last frame.", default=1, range=(1, 4),
           recipe="settings.interpolate", example="2"),
    Option("decoder", str, "full (the model's own temporal VAE) or a tiny decoder for drafts: taesd, tiny-taesd or "
           "a .safetensors file of TAESD's decoder (a fraction of the decoding work; softer frames that may "
           "flicker).", default="full", recipe="settings.decoder", example="tiny-taesd", recorded_at_default=False),
    Option("keep_latents", bool, "Keep the final denoised latents beside the video (NAME.latents.safetensors), so "
           "svd finish can decode them with the full decoder later.", default=False, recipe="settings.keep_latents",
           example="true", recorded_at_default=False),
    Option("draft", bool, f"The cheap first pass of an overnight batch: decoder {DRAFT_DECODER} (unless decoder names "
           "another tiny one) and keep_latents; nothing else changes, so svd finish on its videos gives the frames "
           "of a full run.", default=False, example="true"),
    Option("preview", bool, "Write NAME.preview.webp beside the output after every denoising step: the video so "
           "far, small, decoded with the tiny decoder (decoder's, else taesd if downloaded); removed once the video is "
           "written.", default=False, example="true"),
    Option("keep_preview", bool, "Keep the preview after the video is written (implies preview).", default=False,
           example="true"),
    Option("interpolator", str, "minterpolate (ffmpeg's, built in) or a RIFE model: rife, tiny-rife or a .safetensors "
           "file.", default="minterpolate", recipe="settings.interpolator", example="tiny-rife"),
    Option("watermark", bool, "An invisible watermark in every frame (Stability's method; see svd watermark check) "
           "[default: on].", default=True, negatable=True, recipe="settings.watermark", example="false",
           local_config=False),
    Option("credentials", bool, "Signed C2PA content credentials in every MP4, GIF and PNG frame: made by svd, from "
           "which input, "
           "with which model and recipe (see svd check) [default: on].", default=True, negatable=True,
           recipe="settings.credentials", example="false", local_config=False, recorded_at_default=False),
    Option("sign_cert", Path, "Sign the content credentials with this PEM certificate chain, signing certificate "
           "first [default: svd's local certificate, made once in its config folder].",
           default_label="svd's local certificate", example="me.pem", local_config=False),
    Option("sign_key", Path, "The PEM private key of sign_cert.", example="me.key", local_config=False),
    Option("sign_tsa", str, "A time-stamp authority's URL (RFC 3161) that dates the content credentials' signature; "
           "signing then needs the network [default: none: signed offline, undated].", example="http://127.0.0.1:9",
           local_config=False),
    Option("out", Path, "Output file, or folder (mirrors input folders; end it with /) [default: next to each "
           "input].", short="o", default_label="next to each input", example="videos/", local_config=False),
    Option("name", str, "Name template: {stem} {seed} {index} {model} {fps} {frames} [default: {stem}; "
           "{stem}-{seed} with several seeds].", check=check_template, default_label="{stem}",
           example="{stem}-{fps}fps", local_config=False),
    Option("format", str, "mp4 (H.264), gif, webm (VP9), or frames (a folder of PNGs).", default="mp4",
           choices=FORMATS, recipe="output.format", short="f", example="gif"),
    Option("recursive", bool, "Descend into sub-folders of folder inputs.", default=False, short="r",
           example="true"),
    Option("overwrite", bool, "Redo outputs that already exist (default: skip finished ones).", default=False,
           example="true", local_config=False),
    Option("gallery", bool, "Write index.html in the output folder: every video of the run playing, with its input, "
           "seed and settings, and the failures; updated as videos finish.", default=False, example="true",
           local_config=False),
    Option("memory", str, "auto, high, balanced, low or min: how hard to save GPU memory (see README).",
           default="auto", choices=MEMORY_CHOICES, recipe="runtime.memory.profile",
           example="balanced"),
    Option("device", str, "auto, cuda, cpu or mps.", default="auto", choices=("auto", "cuda", "cpu", "mps"),
           recipe="runtime.device", example="cpu"),
    Option("dtype", str, "auto (fp16 on GPUs, fp32 on the CPU), fp16, bf16 or fp32.", default="auto",
           choices=DTYPES, recipe="runtime.dtype", example="fp32"),
    Option("weights", str, "full (the UNet's weights in the run's dtype) or fp8: stored as float8, each layer cast "
           "to the run's dtype as it runs; half the memory of fp16 weights, the frames change slightly.",
           default="full", choices=WEIGHT_STORAGE, recipe="settings.weights", example="fp8",
           recorded_at_default=False),
    Option("compile", bool, "Compile the UNet's repeated blocks with torch.compile: faster steps once compiled. "
           "The first run on a machine compiles (minutes on a CPU); the code is kept in svd's cache folder and later "
           "runs reuse it. Needs a C++ compiler on the CPU, Triton on a CUDA GPU; frames within rounding of "
           "uncompiled.", default=False, recipe="runtime.compile", example="true", recorded_at_default=False),
    Option("decode_chunk", int, "Frames per VAE decode call [default: from the memory profile].", range=(1, 128),
           recipe="runtime.memory.decode_chunk", default_label="from the memory profile", example="2"),
    Option("vae_tiling", bool, "Seam-free tiled VAE [default: from the memory profile].", negatable=True,
           recipe="runtime.memory.vae_tiling", default_label="from the memory profile", example="true"),
    Option("attention", str, "auto, sdpa, sliced or xformers.", default="auto",
           choices=("auto", "sdpa", "sliced", "xformers"), recipe="runtime.memory.attention", example="sliced"),
    Option("allow_download", bool, "Let a recipe download a model that is not on this machine (a terminal asks "
           "first; other runs refuse without this).", default=False, example="true", local_config=False),
    Option("ray", bool, "Run the batch on Ray workers (each loads the model once): a local Ray instance, started "
           "and stopped for this run, unless an address is given. Needs pip install 'svd-cli[ray]'.", default=False,
           example="true", local_config=False),
    Option("ray_address", str, "A running Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (implies Ray).",
           default_label="a local instance", example="auto", local_config=False),
    Option("workers", int, "Ray workers [default: one per GPU of the Ray instance, else one CPU worker] (implies "
           "Ray).", range=(1, 4096), default_label="one per GPU", example="2", local_config=False),
    Option("json", bool, "Print one JSON object per video, then a summary, on stdout.", default=False,
           example="true", cli_only=True),
    Option("quiet", bool, "Print only errors.", default=False, short="q", example="true", cli_only=True),
)  # fmt: skip
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
# The settings a model brings defaults for, which (with the seed and size) decide the frames.
GENERATION = tuple(o.name for o in OPTIONS if o.from_model and o.name != "size")
CAMERA = ("elevation", "azimuths")  # sv3d-p's camera path (families/sv3d.py): generation settings no model decides
# The settings a recipe records only when they are not at their default (Option.recorded_at_default).
RECORDED_WHEN_SET = {o.name: o.default for o in OPTIONS if not o.recorded_at_default}


# --- values in, checked ----------------------------------------------------------------------------------


def coerce(opt: Option, value: Any) -> Any:
    """A value from a flag, a variable, svd.toml, a recipe or Python, as the option's type (or OptionError)."""
    if value is None:
        return None
    if isinstance(value, str) and opt.parse is not None:
        return opt.parse(value)
    if opt.type is bool:
        return _boolean(opt, value)
    if opt.type in (int, float):
        return _number(opt, value)
    if opt.type is str:
        if not isinstance(value, str):
            raise OptionError(opt.name, value, "expected text.", shown=repr(value))
        return value
    if opt.type is Path:
        if not isinstance(value, (str, Path)):
            raise OptionError(opt.name, value, "expected a path.", shown=repr(value))
        return Path(value)
    if opt.type is tuple:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return tuple(value)
        raise OptionError(opt.name, value, "write it as WIDTHxHEIGHT, e.g. 1024x576.", shown=repr(value))
    if opt.type is list:
        if opt.parse is not None:  # each list option's parser also takes a list (a recipe's, Python's)
            return opt.parse(value)
        if isinstance(value, (list, tuple)):
            return list(value)
        raise OptionError(opt.name, value, "write whole numbers separated by commas, e.g. 1,2,3.", shown=repr(value))
    return value


def _boolean(opt: Option, value: Any) -> bool:
    """True or false from a bool, or from text such as 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise OptionError(opt.name, value, "expected true or false.", shown=repr(value))


def _number(opt: Option, value: Any) -> int | float:
    """A whole number (int options) or a number (float options) from text or a number; never from a bool."""
    kinds, what = ((int, str), "a whole number") if opt.type is int else ((int, float, str), "a number")
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise OptionError(opt.name, value, f"expected {what}.", shown=repr(value))
    try:
        return opt.type(value)
    except ValueError:
        raise OptionError(opt.name, value, f"expected {what}.", shown=repr(value)) from None


def check(opt: Option, value: Any) -> None:
    """Raise OptionError if `value` (already coerced) is outside what the option allows."""
    if value is None:
        return
    if opt.range is not None and not opt.range[0] <= value <= opt.range[1]:
        lo, hi = opt.range
        raise OptionError(opt.name, value, f"must be between {lo} and {hi}.", allowed=opt.range)
    if opt.choices is not None and value not in opt.choices:
        raise OptionError(opt.name, value, f"choose one of {', '.join(map(str, opt.choices))}.", allowed=opt.choices)
    if opt.check is not None:
        opt.check(value)


def uses_ray(req: Request) -> bool:
    """Whether the videos are made by Ray workers (asked for with ray, an address or a worker count)."""
    return bool(req.ray or req.ray_address or req.workers)


class Request:
    """One `svd animate` run as asked for: a value (or None) for every option, plus the inputs.

    Built from any mix of sources (`Request(inputs, **values)`); every value is coerced and checked against
    the schema on the way in, so a request that exists is a valid one (cross-option rules: `validate`).
    """

    def __init__(self, inputs: Iterable[str] = (), **values: Any):
        unknown = set(values) - set(BY_NAME)
        if unknown:
            name = sorted(unknown)[0]
            raise UsageError(f"{name}: not a setting of svd animate; see the option list.", option=name)
        self.inputs: list[str] = [str(i) for i in inputs]
        self.out_is_folder = False  # the output path ended with a path separator (a folder)
        self._values: dict[str, Any] = {}
        for opt in OPTIONS:
            value = coerce(opt, values.get(opt.name))
            check(opt, value)
            self._values[opt.name] = value
        if self._values["draft"]:  # a preset of two settings, which the recipe records in its place
            if self._values["decoder"] == "full":
                raise UsageError(
                    f"{ref('draft')} decodes with a tiny decoder and {ref('decoder')} full asks for the model's own: "
                    f"drop one of them (svd finish decodes a draft with the full decoder later).",
                    option="draft",
                )
            self._values["decoder"] = self._values["decoder"] or DRAFT_DECODER
            self._values["keep_latents"] = True

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is None or name not in values:
            raise AttributeError(name)
        value = values[name]
        return BY_NAME[name].default if value is None and not BY_NAME[name].from_model else value

    def given(self, name: str) -> Any:
        """The value as given (None if not), without the schema default."""
        return self._values[name]

    def replace(self, **values: Any) -> Request:
        new = Request(self.inputs, **{**self._values, **values})
        new.out_is_folder = self.out_is_folder
        return new

    def values(self) -> dict[str, Any]:
        return dict(self._values)


def validate(req: Request, *, need_inputs: bool = True) -> None:
    """Rules between options (each option alone was checked when the request was built)."""
    if req.min_cfg is not None and req.max_cfg is not None and req.min_cfg > req.max_cfg and req.end is None:
        raise UsageError(
            f"{ref('min_cfg')} {req.min_cfg} is above {ref('max_cfg')} {req.max_cfg}: guidance rises from the first "
            "frame (min) to the last (max).",
            option="min_cfg",
        )
    if req.given("seeds") is not None and (req.given("seed") is not None or req.given("variations") is not None):
        raise UsageError(
            f"{ref('seeds')} lists every seed; {ref('seed')} and {ref('variations')} choose them another way: use "
            "only one of them.",
            option="seeds",
        )
    if req.seed is not None and req.variations and req.seed + req.variations - 1 > MAX_SEED:
        raise OptionError(
            "seed", req.seed, f"with {ref('variations')} {req.variations} the last seed would pass {MAX_SEED}.",
            allowed=(0, MAX_SEED - req.variations + 1),
        )  # fmt: skip
    if req.prompt is not None and req.prompts is not None:
        raise UsageError(f"{ref('prompt')} and {ref('prompts')} both give prompts: use one of them.", option="prompt")
    if req.prompts is not None and req.inputs:
        raise UsageError(
            f"{ref('prompts')} makes every first frame from a prompt: drop the input images, or animate them in a "
            "separate run.",
            option="prompts",
        )
    if req.prompt is not None and req.inputs and req.style is None:
        raise UsageError(
            f"{ref('prompt')} makes the first frame from text, so the input images would be ignored: drop them, or "
            f"add {ref('style')} to restyle them instead.",
            option="prompt",
        )
    if req.style is not None and not req.inputs and need_inputs:
        raise UsageError(
            f"{ref('style')} restyles input photos: give one (or put the style into {ref('prompt')} for a first "
            "frame from text).",
            option="style",
        )
    _validate_end(req, need_inputs)
    if req.mask is not None and req.masks is not None:
        raise UsageError(f"{ref('mask')} gives every photo one mask and {ref('masks')} each its own: use one of them.",
                         option="mask")  # fmt: skip
    if (req.mask is not None or req.masks is not None) and not req.inputs and need_inputs:
        name = "mask" if req.mask is not None else "masks"
        raise UsageError(
            f"{ref(name)} marks the region of an input photo that may move: give the photo (a first frame drawn "
            f"from {ref('prompt')} has no layout to mark in advance).",
            option=name,
        )
    if req.keep_latents and req.extend:
        raise UsageError(
            f"{ref('keep_latents')} keeps one clip's latents, and {ref('extend')} starts each clip from the frames "
            "decoded before it, which svd finish could not redo: drop one of them.",
            option="keep_latents",
        )
    if req.keyframes and (req.keep_latents or req.style is not None):
        other = "keep_latents" if req.keep_latents else "style"
        why = "keeps one clip's latents" if req.keep_latents else "would restyle only the first picture"
        raise UsageError(f"{ref(other)} {why}, and {ref('keyframes')} makes a segment per pair of pictures: drop one "
                         "of them.", option="keyframes")  # fmt: skip
    if need_inputs and not req.inputs and req.prompt is None and req.prompts is None:
        raise UsageError(
            "Give at least one input image, folder or glob (or - to read paths from stdin), or "
            f"{ref('prompt')} / {ref('prompts')} to start from text."
        )


def both_ends_option(req: Request) -> str | None:
    """The option that has the videos sampled from both ends (None: none does): end (towards an end picture),
    keyframes (towards the next picture), or loop (motion: back to their own first frame)."""
    if req.end is not None:
        return "end"
    if req.keyframes:
        return "keyframes"
    return "loop" if req.loop == MOTION_LOOP else None


def samples_both_ends(req: Request) -> bool:
    return both_ends_option(req) is not None


def _validate_end(req: Request, need_inputs: bool) -> None:
    """Rules of `end` and the motion loop (bidirectional sampling replaces the step loop's own update)."""
    if req.keyframes and (req.end is not None or req.loop == MOTION_LOOP):
        raise UsageError(f"{ref('keyframes')} ends each segment on the next input picture: drop "
                         f"{ref('end' if req.end is not None else 'loop')}.", option="keyframes")  # fmt: skip
    if req.end is not None and req.loop == MOTION_LOOP:
        raise UsageError(f"{ref('loop')} motion ends the video on its own first frame and {ref('end')} on another "
                         "picture: drop one of them.", option="end")  # fmt: skip
    name = both_ends_option(req)
    if name is None:
        return
    still = "a mask holds part of every frame still"
    conflicts = {"extend": "each extended clip starts on the frame the one before ended on", "mask": still,
                 "masks": still, "cache": "the feature cache reuses one pass's features"}  # fmt: skip
    for other, why in conflicts.items():
        value = req.given(other)
        if value is not None and value != BY_NAME[other].default:  # set, and not to its off value
            raise UsageError(f"{ref(name)} samples from both ends and {why}: drop {ref(other)}.", option=name)
    if not req.inputs and need_inputs:
        raise UsageError(f"{ref(name)} samples a video of an input photo from both ends: give the photo (a first "
                         f"frame drawn from {ref('prompt')} is not supported with it).", option=name)  # fmt: skip


def check_family_settings(req: Request, family: str, model: str) -> None:
    """A usage error if `req` gives a setting that the models of `family` do not take (families/: `refused`), other
    than what they do anyway (their default: a recipe replays every setting)."""
    defaults = FAMILIES[family].defaults
    for name, why in FAMILIES[family].refused.items():
        if (value := req.given(name)) is None or value is False or value == defaults.get(name):
            continue  # not given, a flag given off, or what the model does anyway
        problem = f"{model} takes no such setting: {why}; leave it out."
        if value is True:  # a flag is named alone
            raise UsageError(f"{ref(name)}: {problem}", option=name)
        raise OptionError(name, value, problem, shown=shown_value(value))


def shown_value(value: Any) -> str | None:
    """A list value as the user writes it (20,30 rather than [20.0, 30.0]); None for any other value."""
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return None


def with_defaults(req: Request, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Every generation setting's value for this run: the request's, else the model's."""
    return {name: req.given(name) if req.given(name) is not None else defaults[name] for name in GENERATION}


class GenerationSettings:
    """Everything that decides the frames besides the model and the image: the generation options, seed, size."""

    FIELDS = (*GENERATION, "seed", "width", "height", "cache", *CAMERA)
    # SVD's own sampler, no feature cache, no camera path: when a caller names none.
    IMPLIED = {"sampler": "euler", "cache": 1, "elevation": None, "azimuths": None}
    # Speed levers at their off value are left out of records (`as_dict`): such a video is made as before the
    # lever existed, and a recipe without it replays it off.
    OFF = RECORDED_WHEN_SET

    def __init__(self, **values: Any):
        values = {**self.IMPLIED, **values}
        missing = [f for f in self.FIELDS if f not in values]
        extra = [k for k in values if k not in self.FIELDS]
        if missing or extra:
            raise TypeError(f"GenerationSettings: missing {missing}, unknown {extra}")
        object.__setattr__(self, "_values", {f: values[f] for f in self.FIELDS})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("GenerationSettings is immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationSettings) and other._values == self._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return "GenerationSettings(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"

    def replace(self, **changes: Any) -> GenerationSettings:
        return GenerationSettings(**{**self._values, **changes})

    @classmethod
    def family_defaults(cls, family: str, **values: Any) -> GenerationSettings:
        """A model family's default settings (families/), with `values` (seed, width, height, ...) set."""
        defaults = model_defaults(VIDEO, family)
        return cls(**{name: defaults[name] for name in GENERATION if name in defaults} | values)

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in self._values.items() if name not in self.OFF or value != self.OFF[name]}


# --- a request from every source -------------------------------------------------------------------------


def assemble_request(
    inputs: Iterable[str],
    *,
    explicit: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    recipe: dict | None = None,
    recipe_path: Path | str | None = None,
) -> Request:
    """The request for a run: `explicit` values (flags, variables) beat a recipe, which beats `config` values.

    A recipe's values are checked exactly like flags (an error names the recipe file); a recipe also supplies
    the input (its photo, which must exist) when none is given, and its own seed rather than the seed choice
    of the command; an output named .gif/.webm sets the format unless the format was chosen.
    """
    values: dict[str, Any] = dict(config or {})
    inputs = [str(i) for i in inputs]
    if recipe is not None:
        where = f"{ref('recipe')} {recipe_path}" if recipe_path is not None else "the recipe"
        values.update(checked_recipe_values(recipe, where, explicit))
        recorded = (recipe.get("input") or {}).get("path")
        if not inputs and (recorded or "prompt" not in values):  # a video from a prompt has no input image
            inputs = [recipe_input(recipe, where), *recipe_keyframes(recipe, where)]
        if "seeds" not in explicit and "variations" not in explicit:
            values.pop("seeds", None)
            values.pop("variations", None)
    values.update({k: v for k, v in explicit.items() if v is not None})
    out = values.get("out")
    if out is not None and "format" not in explicit:
        suffix = Path(out).suffix.lower()
        if suffix in (".gif", ".webm"):
            values["format"] = suffix[1:]
    req = Request(inputs, **values)
    req.out_is_folder = isinstance(out, str) and out.endswith(("/", "\\"))
    validate(req)
    return req


def checked_recipe_values(recipe: dict, where: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's option values, each coerced and checked like a flag; a bad one is an error naming the recipe.

    A value the command overrides (`explicit`) is not used, so it is not checked either.
    """
    values = {}
    for name, value in from_recipe(recipe).items():
        if explicit.get(name) is not None:
            continue
        opt = BY_NAME[name]
        try:
            parsed = coerce(opt, value)
            check(opt, parsed)
        except OptionError as exc:
            shown = exc.shown if exc.shown is not None else repr(value)
            raise UsageError(f"{where}: {name} = {shown}: {exc.message}", option="recipe", key=name) from None
        values[name] = parsed
    return values


def recipe_input(recipe: dict, where: str) -> str:
    """The photo a recipe was made from; it must still exist (a recipe never turns into a folder scan)."""
    recorded = _dig(recipe, "input.path")
    if not isinstance(recorded, str) or not recorded.strip():
        raise UsageError(f"{where}: records no input image; give the image to animate as an argument.")
    if not Path(recorded).is_file():
        raise UsageError(
            f"{where}: its input {recorded} is missing (moved or deleted?) or not a file; give the image to animate "
            "as an argument."
        )
    return recorded


def recipe_keyframes(recipe: dict, where: str) -> list[str]:
    """The pictures after the first of a keyframes recipe, in order; each must still exist."""
    recorded = _dig(recipe, "input.keyframes") or []
    paths = [item.get("path") if isinstance(item, dict) else None for item in recorded]
    for path in paths:
        if not isinstance(path, str) or not Path(path).is_file():
            raise UsageError(f"{where}: its keyframe {path} is missing (moved or deleted?) or not a file; give the "
                             "pictures as arguments.")  # fmt: skip
    return paths


# --- recipes ---------------------------------------------------------------------------------------------


def recorded_settings(req: Request) -> dict[str, Any]:
    """The request's values of the options the recipe keeps under "settings" besides the generation settings."""
    skip = {*GENERATION, "seed", "size", "cache", *CAMERA}  # written from GenerationSettings
    return {
        o.name: getattr(req, o.name)
        for o in OPTIONS
        if o.recipe == f"settings.{o.name}" and o.name not in skip
        and (o.recorded_at_default or getattr(req, o.name) != o.default)
    }  # fmt: skip


def _dig(data: dict, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def from_recipe(recipe: dict) -> dict[str, Any]:
    """Option values that repeat a recipe's video (only what the recipe records), unchecked."""
    values = {}
    for opt in OPTIONS:
        if not opt.recipe:
            continue
        if opt.name == "size":
            settings = recipe.get("settings", {})
            value = [settings["width"], settings["height"]] if "width" in settings and "height" in settings else None
        elif opt.name in ("model", "image_model"):
            model = _dig(recipe, opt.recipe) or {}
            if not isinstance(model, dict):
                model = {"name": model}
            # A registry model (downloaded or built in) or a Hub repo by its name; a local folder by its path.
            named = model.get("repo") or not model.get("path") or get_entry(str(model.get("name"))) is not None
            value = model.get("name") if named else model.get("path")
        elif opt.name == "lora":
            model = recipe.get("model")
            items = (model.get("lora") if isinstance(model, dict) else None) or []
            well_formed = isinstance(items, list) and all(
                isinstance(i, dict) and {"path", "scale"} <= i.keys() for i in items
            )
            # A malformed list goes through as it is, for the schema's check to refuse with the recipe's name.
            value = ([f"{i['path']}:{i['scale']}" for i in items] if well_formed else items) or None
        else:
            value = _dig(recipe, opt.recipe)
        if opt.name == "device" and isinstance(value, str):
            value = value.split(":")[0]
        if opt.name == "memory" and value == "custom":
            value = None
        if value is not None:
            values[opt.name] = value
    return values
