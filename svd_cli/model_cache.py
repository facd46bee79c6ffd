"""The models of a run, resolved once and loaded when first needed, shared by every video of it.

The video model (its adapter with its memory plan, as an `VideoModel`), loaded on the first video so `auto` plans
for the real job; the text-to-image model of prompts and styles, never on the device together with the video
model (loading one frees the other); and the post stages' networks, read once and on the device only while
their stage works. `Session` (session.py), the per-video path, asks this cache for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .device import free_memory
from .errors import ModelUnavailableError, UsageError, ref
from .install import check_install
from .kinds import DRAFT_DECODER, KINDS, VIDEO
from .memory import choose_image_plan
from .memory.storage import store_weights
from .models.compiled import compile_problem, compile_unet
from .models.cutout import BackgroundRemover, check_rembg
from .models.decoder import load_tiny_decoder
from .models.files import file_identity
from .models.loading import base_unet_config, dtype_name, load_model, resolve_device, resolve_dtype
from .models.lora import check_loras_fit
from .models.quiet import quiet_transformers
from .models.sources import ModelSource, resolve_file_model, resolve_model
from .options import GenerationSettings, Request, check_family_settings
from .planning.choice import choose_plan
from .progress import Progress
from .stages import PostStage
from .stages.post import model_stages

if TYPE_CHECKING:
    from .stages.animate import VideoModel

REMOVER = "background-remover"  # the kind of the remove_background setting's model (kinds.py)


class ModelCache:
    """What a run resolved and loaded: the sessions of one run (a script's calls, a batch's videos) share it."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.source: ModelSource | None = None  # the video model
        self.defaults: dict[str, Any] = {}  # its defaults (the registry entry's, or its kind's)
        self.weights: dict[str, Any] = {}  # the unet and lora files over it, as the recipe records them
        self.video_model: VideoModel | None = None  # loaded on the first video
        self.compiled = False  # its UNet's repeated blocks compiled (--compile, where torch.compile can run)
        self.image_source: ModelSource | None = None  # the text-to-image model, when a prompt or a style needs one
        self.image_request: str | None = None  # the image model setting `image_source` was resolved for
        self.image_defaults: dict[str, Any] = {}
        self.image_model = None
        # The one-file models of the run, by kind: the post stages' (stages/post.py), the tiny decoder and the
        # background remover; resolved with the video model, read once, recorded (recorded_files).
        self.post_sources: dict[str, ModelSource] = {}
        self.post_models: dict[str, Any] = {}
        self.remover_request: str | None = None  # the background_remover setting the loaded remover was read for
        # The live preview's tiny decoder when the video decodes with the full VAE (not recorded: no frame of the
        # video depends on it).
        self.preview_source: ModelSource | None = None
        self.preview_decoder = None

    # --- the video model: resolved now, loaded on the first video -----------------------------------------

    def resolve(self, request: Request) -> None:
        """The video model `request` names (downloading it if needed), the UNet and LoRA files over it and the
        post stages' files: a missing, unknown or wrong file is found before hours of work."""
        check_install()  # before a built-in model is built or a download starts
        self.source = resolve_model(request.model, kind=VIDEO, progress=self.progress)
        if request.decoder != "full":  # a tiny decoder: recorded (recorded_files) like a post stage's file
            self.post_sources["decoder"] = resolve_file_model(request.decoder, "decoder", progress=self.progress)
        elif request.preview or request.keep_preview:
            self.preview_source = self._preview_source()
        self.defaults = self.source.defaults()
        if request.remove_background:  # its file found and read now: a missing or unreadable one stops the run here
            self.background_remover(request)
        self.weights = self._weight_files(request)
        for stage in model_stages(request):
            self.post_model(stage, request)

    def _preview_source(self) -> ModelSource | None:
        """The preview's decoder beside the full VAE: taesd if it is on this machine (never downloaded for a
        preview), else a note that there will be none."""
        try:
            return resolve_file_model(DRAFT_DECODER, "decoder", download=False, progress=self.progress)
        except ModelUnavailableError:
            self.progress.note(
                f"No live preview: it decodes with {DRAFT_DECODER}, which is not downloaded yet (run `svd weights "
                f"pull {DRAFT_DECODER}`, about 5 MB, or draft with {ref('decoder')} {DRAFT_DECODER})"
            )
            return None

    def _weight_files(self, request: Request) -> dict[str, Any]:
        """The UNet and LoRA files asked for: checked to exist now, identified (size, SHA-256) for the recipe."""
        found: dict[str, Any] = {}
        if request.unet is not None:
            if not request.unet.exists():
                raise UsageError(f"{ref('unet')} {request.unet}: no such file or folder.", option="unet")
            found["unet"] = file_identity(request.unet, "unet", self.progress) if request.unet.is_file() else {
                "path": str(request.unet.resolve())}  # fmt: skip
        for path, scale in request.lora or []:
            if not Path(path).is_file():
                raise UsageError(f"{ref('lora')} {path}: no such file.", option="lora")
            found.setdefault("lora", []).append(file_identity(Path(path), "lora", self.progress) | {"scale": scale})
        if request.lora:
            with quiet_transformers():
                check_loras_fit(base_unet_config(self.source), request.lora)
        return found

    def load(self, request: Request, first: GenerationSettings) -> None:
        """Load the video model and choose its memory plan for a video like `first`."""
        from .stages.animate import VideoModel

        device = resolve_device(request.device)
        dtype = resolve_dtype(request.dtype, device)
        if device.type == "mps" and request.weights == "fp8":
            raise UsageError(
                f"{ref('weights')} fp8: Apple's GPUs (mps) have no float8 type; use {ref('weights')} full there.",
                option="weights",
            )
        if device.type == "cpu" and request.dtype == "fp16":
            self.progress.note(f"fp16 on the CPU is much slower than fp32 ({ref('dtype')} auto); it is meant for GPUs")
        self.release_image_model()  # never on the device together
        self.progress.start("load")
        loras = [(Path(item["path"]), item["scale"]) for item in self.weights.get("lora", [])]
        unet = Path(self.weights["unet"]["path"]) if "unet" in self.weights else None
        model = load_model(self.source, device, dtype, unet=unet, loras=loras)
        store_weights(model.unet, request.weights, model.dtype)
        self.compiled = False
        if request.compile:
            problem = compile_problem(device)
            if problem is None:
                compile_unet(model.unet)
                self.compiled = True
                if device.type == "cpu":
                    self.progress.note(
                        f"{ref('compile')} on the CPU: the compiled blocks measured 1.31x slower a step than "
                        "uncompiled for SVD-XT on an AMD EPYC (benchmarks/README.md); it pays on a CUDA GPU."
                    )
            else:
                self.progress.note(f"{ref('compile')}: {problem}; the UNet runs uncompiled.")
        self.progress.end()
        overrides = {
            "decode_chunk": request.decode_chunk,
            "vae_tiling": request.vae_tiling,
            "attention": request.attention if request.attention != "auto" else None,
        }
        shape = (first.frames, first.width, first.height)
        plan = choose_plan(model, request.memory, overrides, shape, first.cache, "decoder" in self.post_sources,
                           request.weights)  # fmt: skip
        savers = plan.savers()
        self.progress.note(
            f"Memory profile {plan.profile}: {plan.reason} [{', '.join(savers) if savers else 'no savers'}]"
        )
        self.video_model = VideoModel(model, plan)
        if "decoder" in self.post_sources:  # a few MB: it stays on the device with the model
            self.video_model.decoder = load_tiny_decoder(self.post_sources["decoder"], model.dtype)
            self.video_model.decoder.place(device)
        elif self.preview_source is not None and self.preview_decoder is None:
            self.preview_decoder = load_tiny_decoder(self.preview_source, model.dtype)
            self.preview_decoder.place(device)

    @property
    def previewer(self):
        """The tiny decoder a live preview decodes with (the video's own, if it has one), or None."""
        if self.video_model is not None and self.video_model.decoder is not None:
            return self.video_model.decoder
        return self.preview_decoder

    def model_record(self) -> dict:
        """The model as the recipe records it: where it came from, and any UNet and LoRAs over it."""
        return self.source.describe() | self.weights

    def recorded_files(self) -> dict:
        """Settings that name files, as the recipe records them: absolute, so a replay from elsewhere finds them."""
        return {
            KINDS[kind]["option"]: str(Path(source.path).resolve())
            for kind, source in self.post_sources.items()
            if source.entry is None
        }

    def runtime(self) -> dict:
        """Where and how this run computes: recorded so a recipe can be repeated exactly."""
        import diffusers
        import torch

        model, plan = self.video_model.model, self.video_model.memory_plan
        return {
            "device": str(model.device),
            "dtype": dtype_name(model.dtype),
            "memory": plan.describe() | {"attention_kernel": self.video_model.placement.attention},
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            **({"compile": True} if self.compiled else {}),
        }

    # --- the text-to-image model: for prompts and styles, loaded before the video model and freed before it --

    def resolve_image_model(self, wanted: str) -> None:
        """The text-to-image model `wanted` names, resolved once; one loaded for another setting (a script's
        earlier call) is freed first."""
        if self.image_source is not None and self.image_request == wanted:
            return
        self.release_image_model()
        self.image_source = resolve_model(wanted, kind="text-to-image", progress=self.progress)
        self.image_defaults = self.image_source.defaults()
        self.image_request = wanted

    def load_image_model(self, request: Request, settings: dict, size: tuple[int, int]) -> None:
        """Load the text-to-image model (freeing the video model first) with a placement for stills of `size`
        drawn with `settings` (the recipe's image settings)."""
        from .stages.first_frame import drawing_size

        device = resolve_device(request.device)
        if self.video_model is not None:  # never on the device together
            self.video_model.placement.release()
            self.video_model = None
            free_memory(device)
        self.progress.start("load_image")
        model = load_model(self.image_source, device, resolve_dtype(request.dtype, device))
        self.progress.end()
        plan = choose_image_plan(model, request.memory, *drawing_size(settings["size"], size), settings["cfg"] > 1.0)
        model.place(plan.offload)
        where = "on the device" if plan.offload == "none" else f"{plan.offload} offload"
        self.progress.note(f"Image model {model.source.name}: {where} ({plan.reason}); freed before SVD loads")
        self.image_model = model

    def release_image_model(self) -> None:
        """Free the text-to-image model (after the last first frame, before the video model loads)."""
        model = self.image_model
        if model is None:
            return
        device = model.device
        self.image_model = None
        del model
        free_memory(device)

    def background_remover(self, request: Request) -> BackgroundRemover:
        """The background remover `request` names for remove_background (refused first for a model family that
        takes none), resolved and read once; another one named later (a script's call) replaces it."""
        if self.remover_request != request.background_remover:
            check_family_settings(request, self.source.family, self.source.name)
            check_rembg()
            self.post_sources[REMOVER] = resolve_file_model(request.background_remover, REMOVER, progress=self.progress)
            self.post_models[REMOVER] = BackgroundRemover(self.post_sources[REMOVER])
            self.remover_request = request.background_remover
        return self.post_models[REMOVER]

    # --- the post stages' networks ----------------------------------------------------------------------

    def post_model(self, stage: PostStage, request: Request):
        """The weights of a post stage (its setting names the file), resolved and read once, on the CPU."""
        kind = stage.model_kind
        if kind not in self.post_models:
            source = resolve_file_model(getattr(request, kind), kind, progress=self.progress)
            self.post_sources[kind] = source
            self.post_models[kind] = stage.read_model(source, request)
        return self.post_models[kind]

    @contextmanager
    def on_device(self, stage: PostStage, request: Request) -> Iterator[Any]:
        """A post stage's network on the video model's device only while the stage works; then off the device
        again before the next video's UNet needs the memory."""
        model = self.post_model(stage, request)
        model.place(self.video_model.model.device)
        try:
            yield model
        finally:
            model.release()
