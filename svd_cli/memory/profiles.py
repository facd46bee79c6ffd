"""Memory profiles: documented combinations of the savers, and the automatic choice.

| profile  | weights             | CFG          | feed-forward | attention          | VAE decode                    |
|----------|---------------------|--------------|--------------|--------------------|-------------------------------|
| high     | resident            | one batch    | whole        | SDPA / xformers    | all frames in one call        |
| balanced | resident            | split        | chunked      | SDPA / xformers    | 5 frames a call, tiled (256)  |
| low      | streamed offload    | split        | chunked      | sliced if no SDPA  | 5 frames a call, tiled (256)  |
| min      | sequential offload  | split        | chunked      | sliced if no SDPA  | 2 frames a call, tiled (256)  |

Targets for SVD-XT, 25 frames, 1024x576, fp16, simulated peak of live device bytes (planning/simulate.py):
balanced <= 7.5 GiB with no offload at <= 1.10x high's FLOPs, low <= 5 GiB, min <= 3 GiB. `auto` takes the
fastest profile whose simulated peak fits in the free device memory; the analytic `estimate_peak_bytes` is
the fallback when the simulation fails.

Tuning (simulated, SVD-XT 25x1024x576 fp16): balanced decoded 8 frames a call with 128-pixel tiles, peak
8.3 GiB: the decoder's top stage keeps its input (256 channels) and output (128 channels) whole, 0.42 GiB per
frame in the call. 5 frames a call brings that to 2.1 GiB. 256-pixel tiles leave the 144x256 stage untiled and
cut the tiled decoder's extra statistics passes from 3.4x to 2.6x the untiled decoder's FLOPs (decode 588 ->
449 TFLOPs per video; balanced / high 1.10x -> 1.07x) for 0.7 GiB more tile temporaries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

PROFILE_ORDER = ("high", "balanced", "low", "min")
MEMORY_CHOICES = ("auto", *PROFILE_ORDER)
SAFETY_MARGIN = 1.2  # estimates are multiplied by this before comparing with free memory
RESERVE_BYTES = 512 * 2**20  # CUDA context, allocator slack, cuDNN workspaces


@dataclass(frozen=True)
class MemoryPlan:
    """Which savers are on. Each field maps to one mechanism in svd_cli.memory."""

    profile: str
    offload: str = "none"  # none | model | stream | sequential   (placement.py)
    cfg_split: bool = False  # run the two CFG halves one after the other (stages/animate.py)
    ff_chunk_tokens: int | None = None  # feed-forward token slices (feedforward.py)
    attention: str = "auto"  # auto | sdpa | sliced | xformers      (attention.py)
    slice_attention: bool = False  # `auto` may slice when SDPA has no memory-efficient kernel
    decode_chunk: int | None = None  # frames per VAE decode call; None: all frames at once
    vae_tiling: bool = False  # seam-free tiled VAE decode and encode (vae_tiling.py)
    vae_tile: int = 128  # tile core, in pixels of each tiled stage's input
    attention_slice_scores: int = 2**26  # most attention scores one sliced SDPA call may hold
    reason: str = ""

    def describe(self) -> dict:
        return asdict(self)

    def savers(self) -> list[str]:
        """Human names of the savers that are on, for the run's output."""
        names = []
        if self.offload != "none":
            names.append("streamed offload" if self.offload == "stream" else f"{self.offload} offload")
        if self.cfg_split:
            names.append("CFG split")
        if self.ff_chunk_tokens:
            names.append("feed-forward chunking")
        if self.attention == "sliced" or self.slice_attention:
            names.append("attention slicing" + ("" if self.attention == "sliced" else " (if needed)"))
        if self.decode_chunk:
            names.append(f"decode {self.decode_chunk} frames a call")
        if self.vae_tiling:
            names.append("VAE tiling")
        return names


PROFILES: dict[str, MemoryPlan] = {
    "high": MemoryPlan("high"),
    "balanced": MemoryPlan(
        "balanced", cfg_split=True, ff_chunk_tokens=65536, decode_chunk=5, vae_tiling=True, vae_tile=256
    ),
    "low": MemoryPlan(
        "low",
        offload="stream",
        cfg_split=True,
        ff_chunk_tokens=16384,
        slice_attention=True,
        decode_chunk=5,
        vae_tiling=True,
        vae_tile=256,
    ),
    "min": MemoryPlan(
        "min",
        offload="sequential",
        cfg_split=True,
        ff_chunk_tokens=8192,
        slice_attention=True,
        decode_chunk=2,
        vae_tiling=True,
        vae_tile=256,
    ),
}


# The upscale post stage's tile side in input pixels per profile (None: whole frames), models/upscaler.py.
# Simulated peak (planning/upscale.py) of Real-ESRGAN x2plus, fp16, one 1024x576 frame to 2048x1152: whole frame
# 0.95 GiB; tiles of 768: 0.54; 512 (6 tiles of 352x296): 0.23; 256 (15): 0.14; 128 (45): 0.11 GiB, of which
# 0.03 weights and 0.07 the frame and its fp32 blend buffers. Each fits beside what its profile keeps on the
# device for SVD (tests/test_upscale.py); the tiles cost 6%, 14% and 25% more work than whole frames.
UPSCALE_TILES: dict[str, int | None] = {"high": None, "balanced": 512, "low": 256, "min": 128}


def plan_for(profile: str, **overrides) -> MemoryPlan:
    """The plan of a named profile, with individual savers overridden (None leaves a field as is)."""
    plan = PROFILES[profile]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(plan, **changes) if changes else plan


def step_down(profile: str) -> str | None:
    """The next leaner profile, or None below `min`."""
    i = PROFILE_ORDER.index(profile)
    return PROFILE_ORDER[i + 1] if i + 1 < len(PROFILE_ORDER) else None


@dataclass(frozen=True)
class JobShape:
    """What the peak depends on: the model's sizes and the video's."""

    unet_bytes: int
    image_encoder_bytes: int
    vae_bytes: int
    unet_base_channels: int  # block_out_channels[0] of the UNet (320 for SVD)
    vae_base_channels: int  # block_out_channels[0] of the VAE (128 for SVD)
    frames: int
    width: int
    height: int
    dtype_bytes: int
    cfg: bool = True


def estimate_peak_bytes(plan: MemoryPlan, job: JobShape) -> int:
    """Estimated peak device memory of one video under `plan` (an analytic model, not a measurement).

    Counted per stage, the largest wins: weights on the device during the stage plus the stage's largest
    set of live activations. Activation sizes are channel-equivalents per pixel counted from SVD's
    architecture (skip connections kept across the UNet, resnet and GEGLU temporaries, the VAE decoder's
    widest layers); `svd bench` measures the real peaks on a GPU.
    """
    b = job.dtype_bytes
    latent_tokens = job.frames * (job.width // 8) * (job.height // 8)
    pixels = job.width * job.height
    batch = 2 if job.cfg and not plan.cfg_split else 1
    c_unet = job.unet_base_channels
    weights = {"image_encoder": job.image_encoder_bytes, "unet": job.unet_bytes, "vae": job.vae_bytes}

    def resident(active: str) -> int:
        if plan.offload == "none":
            return sum(weights.values())
        if plan.offload == "model" or (plan.offload == "stream" and active != "unet"):
            return weights[active]
        return min(weights[active], 64 * 2**20)  # sequential, or a streamed UNet: about one layer at a time

    # UNet: skips held for the up path (~5.4 x base channels over all levels) plus the largest transient:
    # a GEGLU feed-forward (12 x base channels) unless chunked, else resnet/attention temporaries (4 x).
    transient = 4 if plan.ff_chunk_tokens else 12
    unet_act = (5.4 + transient) * c_unet * latent_tokens * batch * b
    unet_stage = resident("unet") + unet_act

    # VAE decode: ~7 x base channels per output pixel-frame untiled; tiling keeps only a stage's input and
    # output whole (~3.5 x) plus one tile's temporaries.
    frames_per_call = min(job.frames, plan.decode_chunk or job.frames)
    per_pixel = 3.5 if plan.vae_tiling else 7.0
    decode_act = per_pixel * job.vae_base_channels * pixels * frames_per_call * b
    decode_stage = resident("vae") + decode_act + 4 * latent_tokens * b * 2

    # Conditioning-image encode, in fp32 (SVD's VAE asks for upcasting).
    encode_act = (2.0 if plan.vae_tiling else 5.0) * job.vae_base_channels * pixels * 4
    encode_stage = resident("vae") + encode_act

    return int(max(unet_stage, decode_stage, encode_stage))


def choose_profile(
    free_bytes: int | None, job: JobShape, overrides: dict | None = None
) -> tuple[MemoryPlan, list[tuple[str, int]]]:
    """The fastest profile whose estimated peak (x margin, + reserve) fits in `free_bytes`.

    Returns the plan (with its reason filled in) and every profile's estimate, for `svd doctor` and the
    sidecar. With no free-memory reading (CPU, MPS) the fastest profile is taken.
    """
    overrides = overrides or {}
    return fastest_fitting(free_bytes, [plan_for(name, **overrides) for name in PROFILE_ORDER], job)


# A text-to-image model runs in diffusers' own pipeline: of the savers only weight placement applies, and
# it never changes the picture. Each profile maps to a placement.
IMAGE_OFFLOAD = {"high": "none", "balanced": "none", "low": "model", "min": "sequential"}


def image_plans() -> list[MemoryPlan]:
    """The plans of a text-to-image model, fastest first: resident, model offload, sequential offload."""
    return [MemoryPlan("high"), MemoryPlan("low", offload="model"), MemoryPlan("min", offload="sequential")]


def image_plan_for(profile: str) -> MemoryPlan:
    """The text-to-image plan a named profile means."""
    return next(p for p in image_plans() if p.offload == IMAGE_OFFLOAD[profile])


def fastest_fitting(
    free_bytes: int | None, plans: list[MemoryPlan], job: JobShape
) -> tuple[MemoryPlan, list[tuple[str, int]]]:
    """The first of `plans` (fastest first) whose estimated peak fits in `free_bytes`, with the reason."""
    estimates = [(plan.profile, estimate_peak_bytes(plan, job)) for plan in plans]
    if free_bytes is None:
        return replace(plans[0], reason="no device memory limit to respect (CPU), so the fastest profile"), estimates
    budget = free_bytes - RESERVE_BYTES
    for plan, (name, peak) in zip(plans, estimates, strict=True):
        if peak * SAFETY_MARGIN <= budget:
            reason = (
                f"{gib(free_bytes)} free; {name} needs about {gib(peak)} (estimate, +{SAFETY_MARGIN - 1:.0%} margin)"
            )
            return replace(plan, reason=reason), estimates
    name, peak = estimates[-1]
    reason = f"{gib(free_bytes)} free is less than even {name}'s estimated {gib(peak)}; trying {name} anyway"
    return replace(plans[-1], reason=reason), estimates


def chain_peak_bytes(parts: list[tuple[MemoryPlan, JobShape]]) -> int:
    """Estimated peak of a chain of models that are never on the device together: the largest one's."""
    return max(estimate_peak_bytes(plan, job) for plan, job in parts)


def gib(n: int | float) -> str:
    return f"{n / 2**30:.1f} GiB"


def tile_for(profile: str) -> int | None:
    """The tile side (input pixels) the upscaler uses under a memory profile; None: whole frames."""
    return UPSCALE_TILES[profile]
