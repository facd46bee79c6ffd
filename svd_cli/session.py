"""The one orchestration every caller shares: request -> model -> adapter -> memory plan -> stages -> clip.

The CLI's batches, `--recipe` replays and the library API (`svd_cli.load(...).animate_image(...)`) all run
through a `Session`: it resolves the model once (downloading if needed), knows its defaults, loads it on the
first video (sized for that video, so `auto` plans for the real job) and runs the stages for each video.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ref
from .options import GenerationSettings, Request, with_defaults
from .progress import NullProgress, Progress
from .stages import Clip

if TYPE_CHECKING:
    from PIL import Image

    from .stages.first_frame import FirstFrame


class _Model:
    """What a session resolved and loaded, shared by the sessions derived from it."""

    source = None
    defaults: dict[str, Any] = {}
    animator = None
    weights: dict[str, Any] = {}  # the --unet and --lora files as the recipe records them


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

    # --- 1. the model: resolved now, loaded on the first video ------------------------------------------

    def resolve(self) -> None:
        from .models.sources import resolve_model

        self._model.source = resolve_model(self.request.model, progress=self.progress)
        self._model.defaults = self._model.source.defaults()
        self._model.weights = self._weight_files()
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
        from .errors import UsageError
        from .models.files import file_identity

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
            from .models.loading import base_unet_config
            from .models.lora import check_loras_fit
            from .models.quiet import quiet_transformers

            with quiet_transformers():
                check_loras_fit(base_unet_config(self.source), req.lora)
        return found

    def model_record(self) -> dict:
        """The model as the recipe records it: where it came from, and any UNet and LoRAs over it."""
        return self.source.describe() | self._model.weights

    def load(self, first: GenerationSettings) -> None:
        """Load the model and choose its memory plan for a video like `first`."""
        from .memory import choose_plan
        from .models.loading import load_model, resolve_device, resolve_dtype
        from .stages.animate import Animator

        req = self.request
        device = resolve_device(req.device)
        dtype = resolve_dtype(req.dtype, device)
        if device.type == "cpu" and req.dtype == "fp16":
            self.progress.note(f"fp16 on the CPU is much slower than fp32 ({ref('dtype')} auto); it is meant for GPUs")
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

    # --- 2. per video: settings, first frame, animate ---------------------------------------------------

    def settings_for(self, seed: int, size: tuple[int, int]) -> GenerationSettings:
        values = with_defaults(self.request, self.defaults)
        if values["sampler"] == "animatelcm" and values["steps"] > 8:
            from .errors import OptionError

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

    def animate(self, frame: FirstFrame, seed: int) -> Clip:
        """The animate stage (and, as they come, extend and post stages) on one first frame."""
        settings = self.settings_for(seed, frame.picture.size)
        if self.animator is None:
            self.load(settings)
        frames = self.animator.animate(frame.picture, settings, self.progress)
        record = {"stage": "animate", "model": self.source.name, "sampler": settings.sampler,
                  "settings": settings.as_dict(), "fps_conditioning": settings.fps - 1}  # fmt: skip
        return Clip(frames=frames, fps=settings.fps, stages=[frame.record, record])

    def runtime(self) -> dict:
        """Where and how this run computes: recorded so a recipe can be repeated exactly."""
        import diffusers
        import torch

        from .models.loading import dtype_name

        model, plan = self.animator.model, self.animator.plan
        return {
            "device": str(model.device),
            "dtype": dtype_name(model.dtype),
            "memory": plan.describe() | {"attention_kernel": self.animator.placement.attention},
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        }
