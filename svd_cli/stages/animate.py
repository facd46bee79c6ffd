"""The animate stage: one still image in, video frames out.

`VideoModel.__call__` is the whole path, top to bottom, in numbered steps that mirror diffusers'
`StableVideoDiffusionPipeline.__call__`; it names no model family: what differs between families (the
conditioning, the guidance, one denoiser call) it asks the model's family (families/), and the rest of the
model through its adapter (models/adapters.py).
With no memory saver on it computes the same frames as diffusers for the same weights, image, seed and
settings (tests/test_fidelity.py); each saver changes only how the work is scheduled (CFG halves one
after the other, decode in chunks or tiles, weights moved to the device on use).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from ..device import free_memory
from ..errors import OutOfMemoryError, ref
from ..families import Conditioning, family_of
from ..memory import MemoryPlan, apply_plan, plan_for, step_down
from ..memory.storage import stored_in_fp8
from ..memory.vae_tiling import decode_tiled, encode_tiled, is_per_frame
from ..models.decoder import decode_each
from ..models.loading import dtype_name
from ..models.quiet import quiet_transformers
from ..options import GenerationSettings
from ..progress import NullProgress, Progress
from .hooks import Denoiser, KeepLatents, LivePreview, NonFiniteValues, Step, StepCallback, finite, step_hooks
from .hooks.ends import BothEnds
from .hooks.mask import MaskBlend, composite, latent_region

__all__ = ["VideoModel", "GenerationSettings"]


@dataclass
class DenoiserInputs:
    """The family's denoiser inputs for one video: conditional, unconditional (with CFG), and both halves as one
    batch (with CFG and no CFG split)."""

    conditional: dict[str, torch.Tensor]
    unconditional: dict[str, torch.Tensor] | None = None
    batched: dict[str, torch.Tensor] | None = None


class VideoModel:
    """A loaded video model (its adapter) under a memory plan, turning pictures into a clip's frames one after
    another: `__call__` once, `make_frames` with the retries after an out-of-memory or non-finite values."""

    def __init__(self, model, plan: MemoryPlan):
        self.model = model
        self.family = family_of(model)
        self.denoise = self.family.denoise  # one denoiser call (the simulator counts repeated calls once)
        self.memory_plan = plan
        self.placement = apply_plan(model, plan)
        self.upcast: dict[str, str] = {}  # components the NaN guard moved to a wider dtype
        self.decoder = None  # a tiny decoder (models/decoder.py, a PostModel on the device) in place of the VAE's

    def configure(self, plan: MemoryPlan) -> None:
        """Switch to another memory plan (used by the out-of-memory fallback)."""
        self.placement.release()
        free_memory(self.model.device)
        self.memory_plan = plan
        self.placement = apply_plan(self.model, plan)

    def widen(self, role: str, dtype: torch.dtype) -> None:
        """Run one component (denoiser or decoder) in a wider dtype from now on (the NaN guard's retry)."""

        self.placement.release()
        with quiet_transformers():  # diffusers' note about casting with .to() does not apply to a whole-module cast
            self.model.components()[role].to(dtype)
        self.upcast[role] = dtype_name(dtype)
        self.placement = apply_plan(self.model, self.memory_plan)

    def make_frames(
        self,
        image: Image.Image,
        settings: GenerationSettings,
        progress: Progress | None = None,
        on_step: StepCallback | None = None,
        preview: LivePreview | None = None,
        keep: KeepLatents | None = None,
        latents: torch.Tensor | None = None,
        mask: np.ndarray | None = None,
        known: np.ndarray | None = None,
        end: Image.Image | None = None,
    ):
        """`self(image, settings)`, stepping down one memory profile and retrying after an out-of-memory; given
        kept `latents` (svd finish), only their decode (`self.decode`), composited by the `mask`."""
        progress = progress or NullProgress()
        while True:
            try:
                if latents is not None:
                    frames = self.decode(latents.to(self.model.device), progress)
                    return frames if mask is None else composite(frames, _known(image, known), mask)
                return self(image, settings, progress, on_step=on_step, preview=preview, keep=keep, mask=mask,
                            known=known, end=end)  # fmt: skip
            except NonFiniteValues as bad:
                # A UNet stored in fp8 computes in the dtype its casting hooks were given: it cannot be widened.
                widen = bad.stage == "denoising" and not stored_in_fp8(self.model.unet)
                wider = wider_dtype(self.model.unet.dtype, self.model.device) if widen else None
                if wider is None:
                    raise bad.error() from None
                progress.end()
                progress.note(
                    f"Non-finite values (NaN) while denoising in {dtype_name(self.model.unet.dtype)}; redoing this "
                    f"video with the denoiser in {dtype_name(wider)} (kept for the rest of the run)"
                )
                self.widen("denoiser", wider)
                continue
            except Exception as exc:  # only out-of-memory errors are handled here
                if not is_out_of_memory(exc):
                    raise
                failed = self.memory_plan.profile
            # Outside the except block, so the traceback's tensors are already unreachable.
            lower = step_down(failed) if failed in ("high", "balanced", "low") else None
            if lower is None:
                free_memory(self.model.device)
                raise OutOfMemoryError(
                    f"Out of memory on {self.model.device} even with {ref('memory')} {failed}; use a smaller "
                    f"{ref('size')} or fewer {ref('frames')}, or close other programs using the GPU.",
                    device=str(self.model.device),
                    profile=failed,
                )
            progress.end()
            progress.note(
                f"Out of memory with {ref('memory')} {failed}; retrying this video with {ref('memory')} {lower}"
            )
            self.configure(
                replace(step_plan(self.memory_plan, lower), reason=f"fell back from {failed} after out of memory")
            )

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        settings: GenerationSettings,
        progress: Progress | None = None,
        output: str = "uint8",
        on_step: StepCallback | None = None,
        preview: LivePreview | None = None,
        keep: KeepLatents | None = None,
        mask: np.ndarray | None = None,
        known: np.ndarray | None = None,
        end: Image.Image | None = None,
    ) -> np.ndarray:
        """Frames (F, H, W, 3) for `image`, which must already be settings.width x settings.height.

        `output="uint8"` gives 8-bit RGB; `"float"` gives the float32 values in [0, 1] before rounding.
        `on_step(step, steps, latents)` is called after every denoising step; a `preview` is rewritten after
        every step from the step's predicted clean latents; `keep` holds the final latents afterwards. With a
        `mask` (weights (H, W), or (F, H, W): stages/first_frame.py, stages/inpaint.py) only the region it marks is
        made; outside it every frame is `image` (a cinemagraph), or the `known` frame (F, H, W, 3) (inpainting).
        With an `end` picture the video is sampled from both ends (hooks/ends.py) and ends on it.
        """
        progress = progress or NullProgress()
        use = self.placement.use
        model, device, family = self.model, self.model.device, self.family
        from diffusers.utils.torch_utils import randn_tensor

        # 1. Check inputs; one CPU generator makes the same seed give the same video on every device.
        if image.size != (settings.width, settings.height):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, expected {settings.width}x{settings.height}")
        generator = torch.Generator("cpu").manual_seed(settings.seed)

        # 2. The family's conditioning of the picture (SVD: its CLIP embedding, its noise-augmented VAE latents and
        #    the micro-conditioning ids), in the denoiser's dtype.
        progress.start("encode")
        conditioning = family.condition(model, image, settings, generator, use=use, encode_latents=self._encode_latents)
        if mask is not None:  # also the clean latents of the known content (no noise drawn)
            pictures = [image] if known is None else [Image.fromarray(frame) for frame in known]
            clean = family.clean_latents(model, pictures, settings, use=use, encode_latents=self._encode_latents)
        if end is not None:  # the end picture's conditioning too (after the start's noise), and both clean latents
            end_conditioning = family.condition(model, end, settings, generator, use=use,
                                                encode_latents=self._encode_latents)  # fmt: skip
            ends = family.clean_latents(model, [image, end], settings, use=use, encode_latents=self._encode_latents)
        progress.end()
        work = model.unet.dtype

        # 3. Timesteps of the sampler (SVD's Euler, or AnimateLCM's consistency sampler); fresh per video.
        scheduler = model.new_scheduler(settings.sampler)
        scheduler.set_timesteps(settings.steps, device=device)

        # 4. Initial noise, scaled for the scheduler's first sigma.
        noise = randn_tensor(family.latent_shape(model, settings), generator=generator, device=device, dtype=work)
        latents = noise * scheduler.init_noise_sigma

        # 5. The family's guidance scale per frame (SVD: rising linearly from min_cfg to max_cfg) and the inputs of
        #    the unconditional half (none when unguided).
        guidance = family.guidance(settings, device, latents.dtype)
        unconditional = family.unconditional(conditioning, settings)
        inputs = self._denoiser_inputs(conditioning, unconditional)
        both = None
        if end is not None:  # each pass from its picture at a constant scale (min_cfg forward, max_cfg backward)
            draw = lambda: randn_tensor(latents.shape, generator=generator, device=device, dtype=work)  # noqa: E731
            both = self._both_ends((conditioning, end_conditioning), ends, settings, scheduler.sigmas, draw)

        # 6. Denoise: one denoiser call per step, two with CFG (see `_denoiser`). A consistency sampler adds fresh
        #    noise between steps. Each step runs the video's step hooks (hooks/: the feature cache, the finite check,
        #    a mask's blend, progress, the live preview, the caller's on_step) before the step, around the denoiser
        #    call and after the scheduler's update; the feature cache's UNet runs only the outer layers on its reuse
        #    steps; a mask keeps the latents outside it on the known content's path, noised with the video's noise;
        #    with an end picture the bidirectional hook makes each step's update itself, in place of the scheduler.
        blend = None
        if mask is not None:
            region = latent_region(mask, model.spatial_factor, device)
            blend = MaskBlend(region, clean, noise, scheduler.sigmas)
        hooks = step_hooks(dtype=work, progress=progress, on_step=on_step, cache=settings.cache, preview=preview,
                           keep=keep, mask=blend, ends=both)  # fmt: skip
        hooks.start(len(scheduler.timesteps))
        with use("denoiser") as unet:
            denoise = self._denoiser(hooks.module(unet), inputs, guidance)
            for number, t in enumerate(scheduler.timesteps, start=1):
                step = Step(number, len(scheduler.timesteps), t, latents)
                hooks.before(step)
                if not hooks.update(step):
                    noise_pred = hooks.around(step, denoise)(scheduler.scale_model_input(step.latents, t), t)
                    update = scheduler.step(noise_pred, t, step.latents, generator=generator)
                    step.latents, step.denoised = update.prev_sample, getattr(update, "pred_original_sample", None)
                hooks.after(step)
                latents = step.latents
        hooks.end()

        # 7-8. Decode the latents to frames (`decode`, which svd finish also runs alone, on kept latents).
        frames = self.decode(latents, progress, output)

        # 9. The frames as the family shows them; with a mask, every pixel outside it is the known content's own
        #    (feathered at the mask's edge).
        frames = family.output_frames(frames, image)
        return frames if mask is None else composite(frames, _known(image, known), mask)

    def decode(self, latents: torch.Tensor, progress: Progress, output: str = "uint8") -> np.ndarray:
        """Frames (F, H, W, 3) of denoised latents (batch, frames, channels, h, w) on the model's device."""

        # 7. Decode latents to pixels, `decode_chunk` frames per VAE call (all at once by default). Non-finite
        #    pixels from a half-precision decoder: decode again in fp32 (as A1111 does); still broken: fail. A tiny
        #    decoder instead decodes the latents as they are (its latent scale is 1), one frame at a time.
        if self.decoder is not None:
            frames = self._decode_tiny(latents.flatten(0, 1), progress)
        else:
            latents = 1 / self.model.scaling_factor * latents.flatten(0, 1)
            frames = self._decode_all(latents, progress)

        # 8. To RGB in [0, 1], then 8 bits, rounding exactly as diffusers' image processor does.
        video = (torch.cat(frames) * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()
        if output == "float":
            return video.numpy()
        return (video * 255).round().to(torch.uint8).numpy()

    # --- steps' details -----------------------------------------------------------------------------------

    def _decode_all(self, latents: torch.Tensor, progress: Progress) -> list[torch.Tensor]:
        count = latents.shape[0]
        chunk = self.memory_plan.decode_chunk or count
        while True:
            decoder_dtype = self.model.vae.decoder.conv_in.weight.dtype
            progress.start("decode", total=count)
            frames = []
            with self.placement.use("decoder"):
                for start in range(0, count, chunk):
                    part = latents[start : start + chunk].to(decoder_dtype)
                    frames.append(self._decode(part).float())
                    progress.advance(part.shape[0])
            progress.end()
            if all(finite(f) for f in frames):
                return frames
            if decoder_dtype == torch.float32:
                raise NonFiniteValues("decoding", None, None, decoder_dtype)
            progress.note(
                f"Non-finite values (NaN) while decoding in {dtype_name(decoder_dtype)}; decoding again with the VAE "
                "decoder in fp32 (kept for the rest of the run)"
            )
            self.widen("decoder", torch.float32)

    def _decode_tiny(self, latents: torch.Tensor, progress: Progress) -> list[torch.Tensor]:
        progress.start("decode", total=latents.shape[0])
        frames = []
        for frame in decode_each(self.decoder, latents):
            frames.append(frame)
            progress.advance(1)
        progress.end()
        if not all(finite(f) for f in frames):
            raise NonFiniteValues("decoding", None, None, self.decoder.dtype)
        return frames

    def _denoiser_inputs(self, conditioning: Conditioning, unconditional: Conditioning | None) -> DenoiserInputs:
        """The denoiser's inputs for the calls of a step: the conditional ones alone when unguided; with CFG the
        unconditional and conditional halves as one batch of 2 x frames, as diffusers does, or (the memory plan's
        CFG split) one after the other: half the activations, the same result."""
        if unconditional is None:
            return DenoiserInputs(conditioning.inputs)
        if self.memory_plan.cfg_split:
            return DenoiserInputs(conditioning.inputs, unconditional.inputs)
        batched = {name: torch.cat([unconditional.inputs[name], value]) for name, value in conditioning.inputs.items()}
        return DenoiserInputs(conditioning.inputs, unconditional.inputs, batched)

    def _both_ends(self, conditionings, ends: torch.Tensor, settings, levels: torch.Tensor, noise) -> BothEnds:
        """The bidirectional step's hook: each pass from its picture's conditioning (start, end), both halves of
        guidance at any scale (it steps along the unconditional estimate); `ends` are both pictures' latents."""
        family = self.family
        halves = [self._halves(self._denoiser_inputs(c, family.unconditional(c, settings, always=True)))
                  for c in conditionings]  # fmt: skip
        return BothEnds(start=ends[:, :1], end=ends[:, 1:], forward=halves[0], backward=halves[1],
                        scales=(settings.min_cfg, settings.max_cfg), levels=levels, noise=noise)  # fmt: skip

    def _halves(self, inputs: DenoiserInputs):
        """Both halves of guidance for the bidirectional step: (unconditional, conditional) predictions, as one
        batch or (the memory plan's CFG split) one after the other."""
        call = self.denoise

        def halves(unet, model_input: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if inputs.batched is None:
                return call(unet, model_input, t, **inputs.unconditional), call(
                    unet, model_input, t, **inputs.conditional
                )
            return call(unet, torch.cat([model_input] * 2), t, **inputs.batched).chunk(2)

        return halves

    def _denoiser(self, unet, inputs: DenoiserInputs, guidance: torch.Tensor) -> Denoiser:
        """The (guided) noise prediction of one step, from `self.denoise`: the family's one denoiser call."""
        call = self.denoise
        if inputs.unconditional is None:
            return lambda model_input, t: call(unet, model_input, t, **inputs.conditional)

        def guided(model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if inputs.batched is None:
                uncond = call(unet, model_input, t, **inputs.unconditional)
                cond = call(unet, model_input, t, **inputs.conditional)
            else:
                uncond, cond = call(unet, torch.cat([model_input] * 2), t, **inputs.batched).chunk(2)
            return uncond + guidance * (cond - uncond)

        return guided

    def _encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE latent of the conditioning image: the mode of its posterior, in fp32 if the VAE asks."""

        vae = self.model.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        parts = self.placement.components["vae_encoder"]
        if upcast:
            parts.to(torch.float32)
        try:
            pixels = pixels.to(dtype=torch.float32 if upcast else vae.dtype)
            if self.memory_plan.vae_tiling:
                return encode_tiled(vae, pixels, self.memory_plan.vae_tile)
            return vae.encode(pixels).latent_dist.mode()
        finally:
            if upcast:
                parts.to(torch.float16)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:

        vae = self.model.vae
        if self.memory_plan.vae_tiling:
            return decode_tiled(vae, latents, num_frames=latents.shape[0], tile=self.memory_plan.vae_tile)
        if is_per_frame(vae):
            return vae.decode(latents).sample
        return vae.decode(latents, num_frames=latents.shape[0]).sample


def _known(image: Image.Image, known: np.ndarray | None) -> np.ndarray:
    """What a mask keeps: the known frames, else the picture (every frame)."""
    return np.asarray(image) if known is None else known


def wider_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype | None:
    """The next dtype to try after non-finite values: fp16 -> bf16 (where supported) -> fp32; None after fp32."""
    if dtype == torch.float16:
        bf16 = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
        return torch.bfloat16 if bf16 else torch.float32
    if dtype == torch.bfloat16:
        return torch.float32
    return None


def degenerate_frames(frames: np.ndarray) -> list[int]:
    """1-based numbers of the frames whose every pixel has the same colour (all black, all grey...)."""
    pixels = frames.reshape(frames.shape[0], -1, frames.shape[-1])
    return [int(i) + 1 for i in np.flatnonzero((pixels == pixels[:, :1]).all(axis=(1, 2)))]


def step_plan(current: MemoryPlan, profile: str) -> MemoryPlan:
    """The named profile's plan, keeping the user's explicit attention choice."""

    return plan_for(profile, attention=current.attention if current.attention != "auto" else None)


def is_out_of_memory(exc: BaseException) -> bool:
    cuda_oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch < 2.5 has only the latter
    if isinstance(exc, cuda_oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )
