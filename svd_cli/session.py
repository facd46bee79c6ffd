"""The one orchestration every caller shares: request -> model -> adapter -> memory plan -> stages -> clip.

The CLI's batches, recipe replays and the library API (`svd_cli.load(...).animate_image(...)`) all run
through a `Session`: it resolves the model once (downloading if needed), knows its defaults, loads it on the
first video (sized for that video, so `auto` plans for the real job) and runs the stages for each video.

With a prompt or a style the session has a second model, the text-to-image model that makes the first
frames. The two are never loaded together: loading one frees the other, and a batch (batch.run_jobs) makes
every first frame with one load of the image model before it loads SVD once for every video.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .device import free_memory
from .errors import OptionError, UsageError, ref
from .io.segments import SegmentStore
from .memory import choose_image_plan
from .models.files import file_identity
from .models.loading import base_unet_config, dtype_name, load_model, resolve_device, resolve_dtype
from .models.lora import check_loras_fit
from .models.quiet import quiet_transformers
from .models.sources import resolve_file_model, resolve_model
from .options import GenerationSettings, Request, with_defaults
from .planning.choice import choose_plan
from .progress import NullProgress, Progress
from .result import Animation
from .stages import Clip, PostStage, StageContext
from .stages.extend import color_drift, color_stats, match_colors, segment_seed
from .stages.post import model_stages, wanted_stages

if TYPE_CHECKING:
    from PIL import Image

    from .stages.first_frame import FirstFrame
    from .stages.hooks import StepCallback


class _Model:
    """What a session resolved and loaded, shared by the sessions derived from it."""

    source = None
    defaults: dict[str, Any] = {}
    animator = None
    image_source = None  # the text-to-image model, when a prompt or a style needs one
    image_request: str | None = None  # the image model setting `image_source` was resolved for
    image_defaults: dict[str, Any] = {}
    image_model = None
    weights: dict[str, Any] = {}  # the unet and lora files as the recipe records them

    def __init__(self):
        # The weights files of post stages (stages/post.py), by model kind: resolved with the model, read once.
        self.post_sources: dict[str, Any] = {}
        self.post_models: dict[str, Any] = {}


class Session:
    """One model for many videos."""

    def __init__(self, request: Request, progress: Progress | None = None, model: _Model | None = None):
        self.request = request
        self.progress = progress or NullProgress()
        self._model = model or _Model()

    def derive(self, request: Request) -> Session:
        """A session for other settings on the same resolved and loaded model (the API's per-call options)."""
        return Session(request, self.progress, self._model)

    source = property(lambda self: self._model.source)
    defaults = property(lambda self: self._model.defaults)
    animator = property(lambda self: self._model.animator)
    image_source = property(lambda self: self._model.image_source)

    # --- 1. the model: resolved now, loaded on the first video ------------------------------------------

    def resolve(self) -> None:

        self._model.source = resolve_model(self.request.model, kind="svd", progress=self.progress)
        self._model.defaults = self._model.source.defaults()
        self._model.weights = self._weight_files()
        for stage in model_stages(self.request):  # a missing, unknown or wrong file is found before hours of work
            self._post_model(stage)
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

    def _weight_files(self) -> dict[str, Any]:
        """The UNet and LoRA files asked for: checked to exist now, identified (size, SHA-256) for the recipe."""

        req, found = self.request, {}
        if req.unet is not None:
            if not req.unet.exists():
                raise UsageError(f"{ref('unet')} {req.unet}: no such file or folder.", option="unet")
            found["unet"] = file_identity(req.unet, "unet", self.progress) if req.unet.is_file() else {
                "path": str(req.unet.resolve())}  # fmt: skip
        for path, scale in req.lora or []:
            if not Path(path).is_file():
                raise UsageError(f"{ref('lora')} {path}: no such file.", option="lora")
            found.setdefault("lora", []).append(file_identity(Path(path), "lora", self.progress) | {"scale": scale})
        if req.lora:
            with quiet_transformers():
                check_loras_fit(base_unet_config(self.source), req.lora)
        return found

    def recorded_files(self) -> dict:
        """Settings that name files, as the recipe records them: absolute, so a replay from elsewhere finds them."""
        return {
            kind: str(Path(source.path).resolve())
            for kind, source in self._model.post_sources.items()
            if source.entry is None
        }

    def model_record(self) -> dict:
        """The model as the recipe records it: where it came from, and any UNet and LoRAs over it."""
        return self.source.describe() | self._model.weights

    def load(self, first: GenerationSettings) -> None:
        """Load the model and choose its memory plan for a video like `first`."""
        from .stages.animate import Animator

        req = self.request
        device = resolve_device(req.device)
        dtype = resolve_dtype(req.dtype, device)
        if device.type == "cpu" and req.dtype == "fp16":
            self.progress.note(f"fp16 on the CPU is much slower than fp32 ({ref('dtype')} auto); it is meant for GPUs")
        self.release_image_model()  # never on the device together
        self.progress.start("load")
        weights = self._model.weights
        loras = [(Path(item["path"]), item["scale"]) for item in weights.get("lora", [])]
        unet = Path(weights["unet"]["path"]) if "unet" in weights else None
        model = load_model(self.source, device, dtype, unet=unet, loras=loras)
        self.progress.end()
        overrides = {
            "decode_chunk": req.decode_chunk,
            "vae_tiling": req.vae_tiling,
            "attention": req.attention if req.attention != "auto" else None,
        }
        plan = choose_plan(model, req.memory, overrides, (first.frames, first.width, first.height))
        savers = plan.savers()
        self.progress.note(
            f"Memory profile {plan.profile}: {plan.reason} [{', '.join(savers) if savers else 'no savers'}]"
        )
        self._model.animator = Animator(model, plan)

    # --- 1b. the text-to-image model: for prompts and styles, loaded before SVD and freed before it --------

    @property
    def uses_image_model(self) -> bool:
        req = self.request
        return req.prompt is not None or req.prompts is not None or req.style is not None

    def resolve_image_model(self) -> None:
        """The text-to-image model this request names, resolved once; one loaded for another request's image
        model setting (a script's earlier call) is freed first."""

        wanted = self.request.image_model
        if self._model.image_source is not None and self._model.image_request == wanted:
            return
        self.release_image_model()
        self._model.image_source = resolve_model(wanted, kind="text-to-image", progress=self.progress)
        self._model.image_defaults = self._model.image_source.defaults()
        self._model.image_request = wanted

    def image_settings(self, prompt: str | None = None) -> dict:
        """The image model's settings for a first frame (recorded in the recipe): request, else model defaults."""
        req, d = self.request, self._model.image_defaults
        size = d.get("size")
        return {
            "model": self._model.image_source.name,
            "prompt": prompt if prompt is not None else req.prompt,
            "negative_prompt": req.negative_prompt or "",
            "steps": req.image_steps if req.image_steps is not None else d["steps"],
            "cfg": req.image_cfg if req.image_cfg is not None else d["cfg"],
            "style": req.style,
            "style_strength": req.style_strength if req.style is not None else None,
            "size": list(size) if size else None,
        }

    def load_image_model(self, size: tuple[int, int]) -> None:
        """Load the text-to-image model (freeing SVD first) with a placement for stills of `size`."""
        from .stages.first_frame import drawing_size

        req = self.request
        if self._model.animator is not None:  # never on the device together
            self._model.animator.placement.release()
            self._model.animator = None
            free_memory(resolve_device(req.device))
        device = resolve_device(req.device)
        self.progress.start("load_image")
        model = load_model(self._model.image_source, device, resolve_dtype(req.dtype, device))
        self.progress.end()
        settings = self.image_settings()
        plan = choose_image_plan(model, req.memory, *drawing_size(settings["size"], size), settings["cfg"] > 1.0)
        model.place(plan.offload)
        where = "on the device" if plan.offload == "none" else f"{plan.offload} offload"
        self.progress.note(f"Image model {model.source.name}: {where} ({plan.reason}); freed before SVD loads")
        self._model.image_model = model

    def release_image_model(self) -> None:
        """Free the text-to-image model (after the last first frame, before SVD loads)."""
        model = self._model.image_model
        if model is None:
            return

        device = model.device
        self._model.image_model = None
        del model
        free_memory(device)

    def video_size(self, image_size: tuple[int, int] | None = None) -> tuple[int, int]:
        from .stages.first_frame import target_size

        model_size = self.defaults["size"]
        return target_size(self.request.size, model_size, image_size or model_size)

    def first_frame_from_prompt(self, prompt: str, seed: int) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        size = self.video_size()
        if self._model.image_model is None:
            self.load_image_model(size)
        model = self._model.image_model
        return first_frame.from_prompt(
            model, prompt, self.image_settings(prompt), seed, size, req.fit, req.background, self.progress
        )

    def restyle(self, frame: FirstFrame, seed: int) -> FirstFrame:
        from .stages import first_frame

        if self._model.image_model is None:
            self.load_image_model(frame.picture.size)
        return first_frame.restyled(self._model.image_model, frame, self.image_settings(), seed, self.progress)

    # --- 2. per video: settings, first frame, animate ---------------------------------------------------

    def settings_for(self, seed: int, size: tuple[int, int]) -> GenerationSettings:
        values = with_defaults(self.request, self.defaults)
        if values["sampler"] == "animatelcm" and values["steps"] > 8:
            raise OptionError(
                "steps", values["steps"],
                f"the animatelcm sampler takes 1-8 steps (4 is its default); use {ref('sampler')} euler for more.",
                allowed=(1, 8),
            )  # fmt: skip
        return GenerationSettings(**values, seed=seed, width=size[0], height=size[1])

    def first_frame_from_file(self, path) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        frame = first_frame.from_file(path, req.size, self.defaults["size"], req.fit, req.background)
        for note in frame.notes:
            self.progress.note(note)
        return frame

    def first_frame_from_image(self, image: Image.Image) -> FirstFrame:
        from .stages import first_frame

        req = self.request
        size = first_frame.target_size(req.size, self.defaults["size"], image.size)
        return first_frame.from_image(image, size, req.fit, req.background, {"source": "image"})

    def animate(
        self,
        frame: FirstFrame,
        settings: GenerationSettings,
        output: Path | None = None,
        on_step: StepCallback | None = None,
    ) -> Clip:
        """The animate stage on one first frame; with `extend`, the clips that continue it, chained into one.

        With an `output`, each finished clip is kept in a work folder beside it (io/segments.py) and reused by a
        rerun of the same work, so an interrupted long video continues where it stopped. `on_step(step, steps,
        latents)` is called after every denoising step of every clip made (not of those reused).
        """
        import numpy as np
        from PIL import Image

        from .stages.animate import degenerate_frames

        req, seed = self.request, settings.seed
        # 1. The model, loaded for these settings on the first video.
        if self.animator is None:
            self.load(settings)
        store = None
        if output is not None and req.extend:
            store = SegmentStore(output, self._segment_key(frame, settings), seed)
        record = {"stage": "animate", "model": self.source.name, "sampler": settings.sampler,
                  "settings": settings.as_dict(), "fps_conditioning": settings.fps - 1}  # fmt: skip
        records, clips, reference = [frame.record], [], None
        count = 1 + req.extend
        for k in range(count):
            # 2. Clip k: from the first frame, or from the last frame of clip k - 1, with seed + k.
            segment = {"segment": k, "seed": segment_seed(seed, k)} if count > 1 else {}
            frames = store.load(k) if store is not None else None
            if frames is not None:
                self.progress.note(f"Segment {k + 1}/{count}: finished by an earlier run, reused")
                segment["reused"] = True
            else:
                if count > 1:
                    self.progress.note(f"Segment {k + 1}/{count} (seed {segment['seed']})")
                start = frame.picture if k == 0 else Image.fromarray(clips[-1][-1])
                frames = self.animator.animate(
                    start, settings.replace(seed=segment_seed(seed, k)), self.progress, on_step=on_step
                )
                # 3. Later clips take the first clip's colours back (their drift adds up clip after clip): the
                #    frames the video keeps, all but the first (the frame the clips share).
                if k > 0 and req.color_match:
                    segment["drift_before"] = _rounded(color_drift(frames[1:], reference))
                    frames = np.concatenate([frames[:1], match_colors(frames[1:], reference)])
                if store is not None:
                    store.save(k, frames)
            if k == 0:
                reference = color_stats(frames)
            clips.append(frames if k == 0 else frames[1:])  # the frame two clips share appears once
            records.append(record | segment)
        # 4. One clip of them all; frames of a single flat colour are worth a warning.
        if self.animator.upcast:
            records[1]["upcast"] = dict(self.animator.upcast)  # the NaN guard widened these components
        frames = np.concatenate(clips) if len(clips) > 1 else clips[0]
        flat = degenerate_frames(frames)
        warnings = []
        if flat:
            which = "every frame is" if len(flat) == len(frames) else f"frames {', '.join(map(str, flat[:10]))} are"
            warnings.append(f"{which} a single flat colour: the model may have failed (check the video)")
        for warning in warnings:
            self.progress.note(f"Warning: {warning}")
        return Clip(frames=frames, fps=settings.fps, stages=records, warnings=warnings)

    def _segment_key(self, frame: FirstFrame, settings: GenerationSettings) -> str:
        """What decides a segment's frames: the first frame, the settings, the model, device and precision."""
        import hashlib
        import json

        model = self.animator.model
        parts = {
            "first_frame": hashlib.sha256(frame.picture.tobytes()).hexdigest(),
            "size": frame.picture.size,
            "settings": settings.as_dict(),
            "color_match": self.request.color_match,
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
    ) -> Animation:
        """One video from its first frame, in memory: the animate stage (with extend's clips), then the post
        stages; what every caller (a batch's job, the library) runs after the first frame and before writing."""
        clip = self.finish(self.animate(frame, settings, output, on_step))
        return Animation.of(clip, settings.seed, self.source.name, settings.as_dict(), self.animator.plan.profile,
                            frame.picture)  # fmt: skip

    def finish(self, clip: Clip) -> Clip:
        """The post stages the request asks for, in the order of stages/post.py (each records itself)."""
        context = StageContext(self.request, self.progress, self.animator.plan.profile)
        for stage in wanted_stages(self.request):
            if not stage.needs_model(self.request):
                clip = stage.run(clip, context)
                continue
            with self._on_device(stage) as model:
                clip = stage.run(clip, replace(context, model=model))
        return clip

    def _post_model(self, stage: PostStage):
        """The weights of a post stage (its setting names the file), resolved and read once, on the CPU."""
        kind, models = stage.model_kind, self._model.post_models
        if kind not in models:
            source = resolve_file_model(getattr(self.request, kind), kind, progress=self.progress)
            self._model.post_sources[kind] = source
            models[kind] = stage.read_model(source, self.request)
        return models[kind]

    @contextmanager
    def _on_device(self, stage: PostStage):
        """A post stage's network on the model's device only while the stage works; then off the device again
        before the next video's UNet needs the memory."""

        model = self._post_model(stage)
        model.place(self.animator.model.device)
        try:
            yield model
        finally:
            model.release()

    def runtime(self) -> dict:
        """Where and how this run computes: recorded so a recipe can be repeated exactly."""
        import diffusers
        import torch

        model, plan = self.animator.model, self.animator.plan
        return {
            "device": str(model.device),
            "dtype": dtype_name(model.dtype),
            "memory": plan.describe() | {"attention_kernel": self.animator.placement.attention},
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}
