"""The one orchestration every caller shares, per video: first frame -> animate (with extend's clips) -> post
stages -> the result.

The CLI's batches, recipe replays and the library API (`svd_cli.load(...).animate_image(...)`) all run
through a `Session`: a request (the settings of its videos) over a `ModelCache` (model_cache.py), which resolves
the models once and loads them when first needed. Sessions derived from one (a script's calls with their own
options) share its cache.

With a prompt or a style the first frames come from the text-to-image model. It is never on the device together
with the video model: a batch (batch.run_jobs) makes every first frame with one load of the image model before
it loads the video model once for every video.
"""

from __future__ import annotations

import glob
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputImageError, OptionError, ref
from .families import FAMILIES
from .io.credentials import SIGNED_FORMATS, SigningKey, signing_key
from .io.preview import preview_blocked
from .io.segments import SegmentStore
from .model_cache import ModelCache
from .models.compiled import CLOCK, compile_folder
from .models.loading import dtype_name
from .options import (
    MOTION_LOOP,
    GenerationSettings,
    Request,
    both_ends_option,
    check_family_settings,
    shown_value,
    with_defaults,
)
from .progress import NullProgress, Progress
from .result import Animation
from .stages import Clip, StageContext
from .stages.extend import color_drift, color_stats, match_colors, segment_seed
from .stages.post import wanted_stages

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .stages.first_frame import FirstFrame
    from .stages.hooks import LivePreview, StepCallback


# With an end picture, the scale of each pass (from the input, from the end) unless given: the ViBiD authors' default.
END_GUIDANCE = 1.0


SIGNING_OPTIONS = ("credentials", "sign_cert", "sign_key", "sign_tsa")  # what decides who signs a session's videos


class Session:
    """The per-video path for one request's settings, over the models of its run."""

    def __init__(self, request: Request, progress: Progress | None = None, models: ModelCache | None = None):
        self.request = request
        self.progress = progress or NullProgress()
        self.models = models or ModelCache(self.progress)
        self._signing_key: SigningKey | None = None

    def derive(self, request: Request) -> Session:
        """A session for other settings on the same resolved and loaded models (the API's per-call options), and
        the same signing key while the call signs as this session does (read and checked once, not every call)."""
        derived = Session(request, self.progress, self.models)
        if all(request.given(name) == self.request.given(name) for name in SIGNING_OPTIONS):
            derived._signing_key = self._signing_key
        return derived

    source = property(lambda self: self.models.source)
    defaults = property(lambda self: self.models.defaults)
    video_model = property(lambda self: self.models.video_model)
    image_source = property(lambda self: self.models.image_source)

    # --- 1. the models: resolved now, loaded on the first video -------------------------------------------

    def resolve(self) -> None:
        pictures = {
            "mask": "white where the photo may move, black where it stays",
            "end": "the picture the video ends on",
        }
        for name, what in pictures.items():  # every video needs it: one line before any work
            path = getattr(self.request, name)
            if path is not None and not path.is_file():
                problem = "not a file; give a picture" if path.exists() else "file not found"
                raise OptionError(name, path, f"{problem} ({what}).")
        masks = self.request.masks
        if masks is not None and not masks.is_dir():
            problem = "not a folder" if masks.exists() else "no such folder"
            raise OptionError("masks", masks, f"{problem}; give the folder that holds a mask for each photo.")
        self.signing_key()  # a certificate or key that cannot sign: one line before any work
        self.models.resolve(self.request)
        entry = self.source.entry
        if entry is not None and entry.fixed_conditioning:
            d, req = self.defaults, self.request
            asked = (
                req.given("fps") or d["fps"],
                d["motion_bucket"] if req.motion_bucket is None else req.motion_bucket,
            )
            if asked != (d["fps"], d["motion_bucket"]):
                self.progress.note(
                    f"{self.source.name} was fine-tuned at fps {d['fps']} and motion bucket {d['motion_bucket']}; "
                    "other values may give worse motion"
                )

    def signing_key(self) -> SigningKey | None:
        """Who signs this run's content credentials (io/credentials.py): the user's chain, else svd's own, made on
        first use; None when they are off or the format carries none."""
        req = self.request
        if self._signing_key is None and req.credentials and req.format in SIGNED_FORMATS:
            self._signing_key = signing_key(req.sign_cert, req.sign_key, req.sign_tsa)
        return self._signing_key

    def load(self, first: GenerationSettings) -> None:
        """Load the video model and choose its memory plan for a video like `first`."""
        self.models.load(self.request, first)

    def recorded_files(self) -> dict:
        return self.models.recorded_files()

    def model_record(self) -> dict:
        return self.models.model_record()

    def runtime(self) -> dict:
        return self.models.runtime()

    # --- 1b. the text-to-image model: for prompts and styles, loaded before SVD and freed before it --------

    @property
    def uses_image_model(self) -> bool:
        req = self.request
        return req.prompt is not None or req.prompts is not None or req.style is not None

    def resolve_image_model(self) -> None:
        """The text-to-image model this request names, resolved once (see ModelCache.resolve_image_model)."""
        self.models.resolve_image_model(self.request.image_model)

    def image_settings(self, prompt: str | None = None) -> dict:
        """The image model's settings for a first frame (recorded in the recipe): request, else model defaults."""
        req, d = self.request, self.models.image_defaults
        size = d.get("size")
        return {
            "model": self.models.image_source.name,
            "prompt": prompt if prompt is not None else req.prompt,
            "negative_prompt": req.negative_prompt or "",
            "steps": req.image_steps if req.image_steps is not None else d["steps"],
            "cfg": req.image_cfg if req.image_cfg is not None else d["cfg"],
            "style": req.style,
            "style_strength": req.style_strength if req.style is not None else None,
            "size": list(size) if size else None,
        }

    def release_image_model(self) -> None:
        """Free the text-to-image model (after the last first frame, before the video model loads)."""
        self.models.release_image_model()

    def _image_model(self, size: tuple[int, int]):
        """The text-to-image model, loaded (freeing the video model) for stills of `size` if it is not yet."""
        if self.models.image_model is None:
            self.models.load_image_model(self.request, self.image_settings(), size)
        return self.models.image_model

    def video_size(self, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        from .stages.first_frame import target_size

        model_size = self.defaults["size"]
        return target_size(self.request.size, model_size, image_size or model_size)

    def first_frame_from_prompt(self, prompt: str, seed: int) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        if req.mask is not None:
            raise OptionError(
                "mask", req.mask, f"a first frame drawn from {ref('prompt')} has no layout to mark in advance: give a "
                "photo to mask (drawn frames are kept as stills beside their videos)."
            )  # fmt: skip
        size = self.video_size()
        return first_frame.from_prompt(
            self._image_model(size),
            prompt,
            self.image_settings(prompt),
            seed,
            size,
            req.fit,
            req.background,
            self.progress,
        )

    def restyle(self, frame: FirstFrame, seed: int) -> FirstFrame:
        from .stages import first_frame

        return first_frame.restyled(
            self._image_model(frame.picture.size), frame, self.image_settings(), seed, self.progress
        )

    # --- 2. per video: settings, first frame, animate ---------------------------------------------------

    def settings_for(self, seed: int, size: tuple[int, int]) -> GenerationSettings:
        check_family_settings(self.request, self.source.family, self.source.name)
        values = with_defaults(self.request, self.defaults)
        if (name := both_ends_option(self.request)) is not None:
            if values["sampler"] != "euler":
                raise OptionError(
                    name, getattr(self.request, name),
                    f"sampling from both ends is written for SVD's own Euler sampler; use {ref('sampler')} euler "
                    f"(not {values['sampler']}).",
                )  # fmt: skip
            for name in ("min_cfg", "max_cfg"):  # the two passes' scales: the authors' 1.0 unless given
                values[name] = self.request.given(name) if self.request.given(name) is not None else END_GUIDANCE
        if values["sampler"] == "animatelcm" and values["steps"] > 8:
            raise OptionError(
                "steps", values["steps"],
                f"the animatelcm sampler takes 1-8 steps (4 is its default); use {ref('sampler')} euler for more.",
                allowed=(1, 8),
            )  # fmt: skip
        settings = GenerationSettings(**values, seed=seed, width=size[0], height=size[1], cache=self.request.cache,
                                      elevation=self.request.elevation, azimuths=self.request.azimuths)  # fmt: skip
        if (problem := FAMILIES[self.source.family].check_settings(settings)) is not None:
            name, why = problem
            value = getattr(settings, name)
            raise OptionError(name, value, f"{self.source.name} needs {why}.", shown=shown_value(value))
        return settings

    def mask_for(self, photo: Path, rel_dir: Path = Path()) -> Path | None:
        """The mask of `photo` (found under `rel_dir` of a scanned folder): the request's one mask, or the picture
        of its name in the masks folder (in the same sub-folder, else at the top); None if there is none."""
        from .io.images import image_extensions

        req = self.request
        if req.masks is None:
            return req.mask
        for folder in (req.masks / rel_dir, req.masks):
            for candidate in sorted(folder.glob(glob.escape(photo.stem) + ".*")):
                if candidate.suffix.lower() in image_extensions() and candidate.is_file() and candidate != photo:
                    return candidate
        return None

    def first_frame_from_file(self, path: Path, rel_dir: Path = Path()) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        mask = self.mask_for(path, rel_dir)
        if mask is None and req.masks is not None:
            raise InputImageError(
                f"{ref('masks')} {req.masks} holds no mask named {path.stem} (a picture such as {path.stem}.png) for "
                f"{path}; add one, or animate this photo without {ref('masks')}."
            )
        frame = first_frame.from_file(path, req.size, self.defaults["size"], req.fit, req.background, mask,
                                      req.mask_feather, req.end, self.prepared_picture)  # fmt: skip
        for note in frame.notes:
            self.progress.note(note)
        return frame

    def prepared_picture(self, image: Image.Image, size: tuple[int, int], what: str) -> tuple[Image.Image, dict] | None:
        """The family's own preparation of the input picture `what` (SV3D recentres a cut-out object), after its
        background is removed when the request asks, and what the recipe says of it; or None: the fit and background
        settings fit it."""
        from .stages.first_frame import without_background

        removal: dict = {}
        if self.request.remove_background:
            image, removal, note = without_background(image, self.models.background_remover(self.request), what)
            if note:
                self.progress.note(note)
        prepared = FAMILIES[self.source.family].prepare_picture(image, size)
        return None if prepared is None else (prepared, removal | {"recentred": True})

    def first_frame_from_image(self, image: Image.Image) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        size = first_frame.target_size(req.size, self.defaults["size"], image.size)
        frame = first_frame.from_image(image, size, req.fit, req.background, {"source": "image"},
                                       self.prepared_picture)  # fmt: skip
        frame = frame.masked(req.mask, "the image", image.size, req.fit, req.mask_feather)
        frame = frame.ending(req.end, image.size, req.fit, req.background)
        for note in frame.notes:
            self.progress.note(note)
        return frame

    def _report_compiling(self) -> None:
        """How much of the denoising just done went into compiling the UNet's blocks (--compile), when any did."""
        if self.models.compiled and (seconds := CLOCK.take()) >= 0.05:
            self.progress.note(f"Compiling the UNet's blocks: {seconds:.1f} s of that (kept in {compile_folder()}; "
                               "later runs read it instead of compiling)")  # fmt: skip

    def make_clip(
        self,
        frame: FirstFrame,
        settings: GenerationSettings,
        output: Path | None = None,
        on_step: StepCallback | None = None,
        preview: Path | None = None,
        latents: torch.Tensor | None = None,
    ) -> Clip:
        """The animate stage on one first frame; with `extend`, the clips that continue it, chained into one.

        With an `output`, each finished clip is kept in a work folder beside it (io/segments.py) and reused by a
        rerun of the same work, so an interrupted long video continues where it stopped. `on_step(step, steps,
        latents)` is called after every denoising step of every clip made (not of those reused); a live preview
        is written at `preview` after every step, when the run has a decoder for it. With keep_latents the clip
        carries its final latents; given kept `latents` (svd finish), they are decoded instead of denoising.
        """
        import numpy as np

        from .stages.animate import degenerate_frames
        from .stages.hooks import KeepLatents

        req, seed = self.request, settings.seed
        # 1. The model, loaded for these settings on the first video.
        if self.video_model is None:
            self.load(settings)
        # Clips: 1 + extend, each from the last frame of the one before; or one segment per pair of keyframes.
        count = len(frame.keyframes) if frame.keyframes else 1 + req.extend
        store = None
        if output is not None and count > 1:
            store = SegmentStore(output, self._segment_key(frame, settings), seed)
        record = {"stage": "animate", "model": self.source.name, "sampler": settings.sampler,
                  "settings": settings.as_dict(), "fps_conditioning": settings.fps - 1}  # fmt: skip
        if (decoder := self.video_model.decoder) is not None:
            record["decoder"] = {"name": decoder.name, "sha256": decoder.sha256}
        if latents is not None:
            record["from_kept_latents"] = True  # denoised by an earlier run (a draft), decoded by this one
        keep = KeepLatents() if req.keep_latents else None
        records, clips, reference = [frame.record], [], None
        live = self._live_preview(preview, settings.fps)
        for k in range(count):
            # 2. Clip k: from the first frame, or from the last frame of clip k - 1 (keyframes: from picture k to
            #    picture k + 1), with seed + k.
            segment = {"segment": k, "seed": segment_seed(seed, k)} if count > 1 else {}
            frames = store.load(k) if store is not None else None
            if frames is not None:
                self.progress.note(f"Segment {k + 1}/{count}: finished by an earlier run, reused")
                segment["reused"] = True
            else:
                if count > 1:
                    self.progress.note(f"Segment {k + 1}/{count} (seed {segment['seed']})")
                start, end = self._segment_ends(frame, k, clips)
                frames = self.video_model.make_frames(
                    start, settings.replace(seed=segment_seed(seed, k)), self.progress, on_step=on_step, preview=live,
                    keep=keep, latents=latents, mask=frame.mask, end=end,
                )  # fmt: skip
                self._report_compiling()
                # 3. Later clips take the first clip's colours back (their drift adds up clip after clip): the
                #    frames the video keeps, all but the first (the frame the clips share). Keyframe segments are
                #    held at both ends by their pictures: nothing drifts, and each keeps its pictures' colours.
                if k > 0 and req.color_match and not frame.keyframes:
                    frames = _match_colors(frames, reference, segment, frame)
                if store is not None:
                    store.save(k, frames)
            if k == 0:
                reference = color_stats(frames)
            clips.append(_joined(frames, k, count, keyframes=bool(frame.keyframes)))
            records.append(record | segment)
        if live is not None and live.writes:
            self.progress.note(live.cost())
        # 4. One clip of them all; frames of a single flat colour are worth a warning.
        if self.video_model.upcast:
            records[1]["upcast"] = dict(self.video_model.upcast)  # the NaN guard widened these components
        frames = np.concatenate(clips) if len(clips) > 1 else clips[0]
        flat = degenerate_frames(frames)
        warnings = []
        if flat:
            which = "every frame is" if len(flat) == len(frames) else f"frames {', '.join(map(str, flat[:10]))} are"
            warnings.append(f"{which} a single flat colour: the model may have failed (check the video)")
        for warning in warnings:
            self.progress.note(f"Warning: {warning}")
        return Clip(frames=frames, fps=settings.fps, stages=records, warnings=warnings,
                    latents=keep.latents if keep is not None else None)  # fmt: skip

    def _segment_ends(self, frame: FirstFrame, k: int, clips: list):
        """The pictures clip k starts from and is sampled to end on (None: no end picture): keyframes k and k + 1;
        else the first frame (clip 0) or the last frame made, and the end option's picture, or (a motion loop) the
        first frame itself."""
        from PIL import Image

        if frame.keyframes:
            pictures = [frame.picture, *frame.keyframes]
            return pictures[k], pictures[k + 1]
        start = frame.picture if k == 0 else Image.fromarray(clips[-1][-1])
        return start, frame.picture if self.request.loop == MOTION_LOOP else frame.end

    def _live_preview(self, path: Path | None, fps: int) -> LivePreview | None:
        """The live preview at `path`, if asked for and the run has a tiny decoder for it; a file svd did not make
        at that name is left alone (with a note)."""
        from .stages.hooks import LivePreview

        if path is None or self.models.previewer is None:
            return None
        if preview_blocked(path):
            self.progress.note(f"No live preview: {path} is a file svd did not make, and svd never replaces one")
            return None
        return LivePreview(path, self.models.previewer, fps, self.progress)

    def _segment_key(self, frame: FirstFrame, settings: GenerationSettings) -> str:
        """What decides a segment's frames: the first frame, the settings, the model, device and precision."""
        import hashlib
        import json

        model = self.video_model.model
        parts = {
            "first_frame": hashlib.sha256(frame.picture.tobytes()).hexdigest(),
            "size": frame.picture.size,
            "settings": settings.as_dict(),
            "color_match": self.request.color_match,
            "decoder": self.request.decoder,
            **({"weights": self.request.weights} if self.request.weights != "full" else {}),  # keys before fp8 hold
            **({"mask": hashlib.sha256(frame.mask.tobytes()).hexdigest()} if frame.mask is not None else {}),
            **(
                {"keyframes": [hashlib.sha256(p.tobytes()).hexdigest() for p in frame.keyframes]}
                if frame.keyframes
                else {}
            ),  # fmt: skip
            "model": self.model_record(),
            "device": model.device.type,
            "dtype": dtype_name(model.dtype),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def make(
        self,
        frame: FirstFrame,
        settings: GenerationSettings,
        output: Path | None = None,
        on_step: StepCallback | None = None,
        preview: Path | None = None,
        latents: torch.Tensor | None = None,
    ) -> Animation:
        """One video from its first frame, in memory: the animate stage (with extend's clips), then the post
        stages; what every caller (a batch's job, the library) runs after the first frame and before writing."""
        animated = self.make_clip(frame, settings, output, on_step, preview, latents)
        clip = self.finish(animated)
        profile = self.video_model.memory_plan.profile
        return Animation.of(clip, settings.seed, self.source.name, settings.as_dict(), profile, frame.picture,
                            animated.latents)  # fmt: skip

    def finish(self, clip: Clip) -> Clip:
        """The post stages the request asks for, in the order of stages/post.py (each records itself)."""
        context = StageContext(self.request, self.progress, self.video_model.memory_plan.profile)
        for stage in wanted_stages(self.request):
            if not stage.needs_model(self.request):
                clip = stage.run(clip, context)
                continue
            with self.models.on_device(stage, self.request) as model:
                clip = stage.run(clip, replace(context, model=model))
        return clip


def _joined(frames, k: int, count: int, keyframes: bool):
    """The frames clip k adds to the video: the frame two clips share appears once. An extended clip drops its
    first (the last frame of the clip before, made again); a keyframe segment its last (the backward pass's
    estimate of the next picture, whose own latents start the next segment)."""
    if keyframes:
        return frames if k == count - 1 else frames[:-1]
    return frames if k == 0 else frames[1:]


def _match_colors(frames, reference: dict, segment: dict, first: FirstFrame):
    """A later clip's frames with the first clip's colours back (all but its first frame, the one the clips
    share), its drift before recorded in `segment`; with a mask, only inside it: outside, every frame stays the
    photo's."""
    import numpy as np

    from .stages.hooks.mask import composite

    segment["drift_before"] = _rounded(color_drift(frames[1:], reference))
    frames = np.concatenate([frames[:1], match_colors(frames[1:], reference)])
    return frames if first.mask is None else composite(frames, np.asarray(first.picture), first.mask)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}
