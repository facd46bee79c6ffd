"""`svd plan`'s report: every memory profile and diffusers' recipes for one job, over the whole chain of stages
(every clip's animate pass, the upscaler on every frame), and what `--memory auto` would pick."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import UsageError, ref
from ..kinds import VIDEO, model_defaults
from ..memory.profiles import PROFILE_ORDER, gib, plan_for, tile_for
from ..models.architectures import FAMILY
from ..models.sources import peek_defaults
from ..models.upscaler import NETWORKS
from ..options import Request
from ..progress import NullProgress, Progress
from ..stages.post import wanted_stages
from .simulate import (
    ALLOCATOR_FACTOR,
    CARD_SIZES_GB,
    CUDA_CONTEXT_BYTES,
    FLOOR_LINK,
    GPU_FP16_TFLOPS,
    PCIE_BYTES_PER_SECOND,
    RECIPES,
    WORKSPACE_BYTES,
    Job,
    Simulation,
    architecture_for,
    fits_cards,
    fp8_would_fit,
    pick_profile,
    simulate,
    simulate_recipe,
    time_floors,
    transfer_fields,
)
from .upscale import upscale_cost


@dataclass(frozen=True)
class Chain:
    """What `svd animate` runs around the animate stage, as far as it costs device memory or time."""

    clips: int = 1  # 1 + extend: every clip is a whole animate pass (encode, steps, decode)
    upscaler: str | None = None  # the registry upscaler (models/upscaler.py NETWORKS) when the video is upscaled
    upscaled_frames: int = 0  # frames the upscaler enlarges (after extend and loop)
    output_frames: int = 0  # frames of the written video, after every post stage

    @property
    def plain(self) -> bool:
        """Only the animate stage costs device time."""
        return self.clips == 1 and self.upscaler is None


@dataclass
class PlanReport:
    """What `svd plan` prints: every profile and diffusers recipe for one job, and auto's pick."""

    model: str
    job: Job
    steps: int
    rows: list[Simulation]
    free_bytes: int | None
    auto: str | None = None
    auto_reason: str = ""
    # The fastest profile that keeps every weight on the card and would fit with the UNet's weights in fp8, when
    # auto picks an offloading one for full weights (fp8 changes the frames, so auto never turns it on itself).
    fp8_would_fit: str | None = None
    chain: Chain = field(default_factory=Chain)
    upscale: dict[str, tuple[int, int]] = field(default_factory=dict)  # row -> (peak, FLOPs) of one frame

    def peak_bytes(self, row: Simulation) -> int:
        """The whole chain's peak: the largest of its stages (each frees its memory before the next)."""
        return max(row.peak_bytes, self.upscale.get(row.name, (0, 0))[0])

    def flops(self, row: Simulation) -> int:
        """FLOPs of the whole video: every clip's animate pass, then the upscaler on every frame."""
        return (
            self.chain.clips * row.flops(self.steps, self.job.cache)
            + self.chain.upscaled_frames * self.upscale.get(row.name, (0, 0))[1]
        )

    def transfer_bytes(self, row: Simulation) -> int:
        """Host <-> device bytes of the whole video: every clip's animate pass (the upscaler's few MB aside)."""
        return self.chain.clips * row.transfer_bytes(self.steps, self.job.cache)

    def streamed_bytes(self, row: Simulation) -> int:
        """Of `transfer_bytes`, those copied beside the computation (streamed offload's layer weights)."""
        return self.chain.clips * row.streamed_bytes(self.steps, self.job.cache)

    def table(self) -> tuple[list[str], list[list[str]], list[str]]:
        """Headers, rows and notes for a terminal table."""

        # Short headers ("4090 s" for the RTX 4090) keep the numbers within 80 columns; the notes name the GPUs.
        gpus = (f"{g.split()[-1]} s" for g in GPU_FP16_TFLOPS)
        headers = ["row", "peak", "fits", "TFLOPs", *gpus, "savers"]
        rows = []
        for r in self.rows:
            cards = fits_cards(self.peak_bytes(r))
            floors = time_floors(self.flops(r), self.transfer_bytes(r), self.streamed_bytes(r))
            rows.append(
                [
                    r.name + (" (auto)" if r.name == self.auto else ""),
                    gib(self.peak_bytes(r)),
                    f">= {cards[0]} GB" if cards else f"> {CARD_SIZES_GB[-1]} GB",
                    f"{self.flops(r) / 1e12:,.0f}",
                    *(f"{floors[g]:.1f}" for g in GPU_FP16_TFLOPS),
                    ", ".join(r.savers) or "none",
                ]
            )
        peaks = ", ".join(f"{g} {t:g}" for g, t in GPU_FP16_TFLOPS.items())
        cfg = "" if self.job.guided else " without CFG"
        if self.job.tiny_decoder:
            cfg += ", TAESD's decoder (diffusers' recipes: the VAE's)"
        if self.job.cache > 1:
            cfg += (f", feature cache {self.job.cache} (one full step in {self.job.cache}; diffusers' recipes "
                    "without)")  # fmt: skip
        if self.job.weights != "full":
            cfg += f", the UNet's weights stored in {self.job.weights} (diffusers' recipes: in {self.job.dtype})"
        notes = [
            f"Simulated on fake tensors: peak live tensor bytes on a CUDA GPU and FLOPs for {self.job.frames} frames "
            f"{self.job.width}x{self.job.height} {self.job.dtype}, {self.steps} steps{cfg}; no weights loaded.",
            f"fits: the smallest card with peak x {ALLOCATOR_FACTOR:.2f} (allocator) + {gib(WORKSPACE_BYTES)} "
            f"(workspaces) + {gib(CUDA_CONTEXT_BYTES)} (CUDA context).",
            f"GPU seconds: a floor, FLOPs / dense fp16 tensor peak ({peaks} TFLOPS), plus host-device copies at "
            f"{PCIE_BYTES_PER_SECOND[FLOOR_LINK] / 1e9:g} GB/s ({FLOOR_LINK}): layer-by-layer offload's copies "
            "overlap the compute (the longer counts; its per-layer waits are not counted), every other copy adds "
            "to it; real runs are slower.",
        ]
        if not self.chain.plain:
            parts = [f"{self.chain.clips} clips" if self.chain.clips > 1 else "",
                     f"then the upscaler {self.chain.upscaler} on {self.chain.upscaled_frames} frames"
                     if self.chain.upscaler else ""]  # fmt: skip
            notes.append(f"The whole video: {', '.join(p for p in parts if p)} (peak: the largest stage's).")
        if self.auto:
            notes.append(f"{ref('memory')} auto would pick {self.auto}: {self.auto_reason}.")
        if self.fp8_would_fit:
            notes.append(f"With {ref('weights')} fp8, {self.fp8_would_fit} would fit, every weight on the card: the "
                         "UNet's weights stored in fp8, which changes the frames slightly (see README).")  # fmt: skip
        return headers, rows, notes

    def row_json(self, row: Simulation) -> dict:
        data = row.as_json(self.steps, self.job.cache)
        if self.chain.plain:
            return data
        peak, flops, moved, streamed = (
            self.peak_bytes(row),
            self.flops(row),
            self.transfer_bytes(row),
            self.streamed_bytes(row),
        )
        data["animate_flops"] = data["flops"]  # one clip's animate pass
        if row.name in self.upscale:
            data["stage_peak_bytes"]["upscale"], data["stage_flops"]["upscale"] = self.upscale[row.name]
        cards = fits_cards(peak)
        data.update(peak_bytes=peak, peak_gib=round(peak / 2**30, 2), fits_gb=cards, flops=flops,
                    smallest_card_gib=cards[0] if cards else None, tflops=round(flops / 1e12, 2),
                    **transfer_fields(moved, streamed),
                    time_floor_seconds=time_floors(flops, moved, streamed))  # fmt: skip
        return data

    def as_json(self) -> dict:
        return {
            "model": self.model,
            **asdict(self.job),
            "steps": self.steps,
            "chain": asdict(self.chain),
            "free_bytes": self.free_bytes,
            "auto": self.auto,
            "auto_reason": self.auto_reason,
            "fp8_would_fit": self.fp8_would_fit,
            "rows": [self.row_json(r) for r in self.rows],
            "assumptions": {
                "gpu_fp16_dense_tflops": GPU_FP16_TFLOPS,
                "pcie_bytes_per_second": PCIE_BYTES_PER_SECOND,
                "floor_link": FLOOR_LINK,
                "transfers_overlap_compute": "streamed_bytes only",
                "cuda_context_bytes": CUDA_CONTEXT_BYTES,
                "workspace_bytes": WORKSPACE_BYTES,
                "allocator_factor": ALLOCATOR_FACTOR,
            },
        }


def plan_report(
    model: str,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    dtype: str = "fp16",
    steps: int | None = None,
    free_bytes: int | None = None,
    recipes: bool = True,
    progress: Progress | None = None,
    *,
    max_cfg: float | None = None,
    extend: int = 0,
    loop: str = "off",
    loop_frames: int = 4,
    upscale: int = 1,
    upscaler: str = "realesrgan-x2",
    interpolate: int = 1,
    cache: int = 1,
    decoder: str = "full",
    weights: str = "full",
    end: bool = False,
    mask: bool = False,
    memory: str = "auto",
) -> PlanReport:
    """Simulate every profile (and diffusers' recipes) for a job, or with `memory` naming a profile that one
    alone (nothing to pick from, nothing to compare with); nothing is downloaded, no weights loaded.
    `progress` gets a note as each row starts and ends (an uncached row takes seconds to minutes).

    The settings are `svd animate`'s, defaulted from the model's registry entry (frames, steps, guidance):
    AnimateLCM's 4 steps without CFG cost what they cost. With extend, upscale and a loop the report covers the
    whole video: every clip's animate pass and the upscaler on every frame (its peak simulated per profile)."""
    arch = architecture_for(model)
    # A registry entry's, a folder's, or for an architecture name the registry does not list its family's.
    defaults = peek_defaults(model, VIDEO) or model_defaults(VIDEO, arch.family)
    frames = frames or defaults.get("frames") or int(arch.unet.get("num_frames", 25))
    steps = steps or defaults.get("steps") or 25
    max_cfg = max_cfg if max_cfg is not None else defaults.get("max_cfg", 3.0)
    size = size or defaults.get("size") or (1024, 576)
    # Every tiny decoder svd reads is TAESD's.
    job = Job(frames=frames, width=size[0], height=size[1], dtype=dtype, guided=max_cfg > 1.0, cache=cache,
              tiny_decoder=decoder != "full", weights=weights, end=end, mask=mask)  # fmt: skip
    post = Request(loop=loop, loop_frames=loop_frames, upscale=upscale, upscaler=upscaler, interpolate=interpolate,
                   watermark=False)  # fmt: skip
    chain = _chain(job, extend, post)
    progress = progress or NullProgress()
    profiles = PROFILE_ORDER if memory == "auto" else (memory,)
    runs = [(name, lambda name=name: simulate(arch, plan_for(name), job)) for name in profiles]
    # diffusers has no bidirectional or masked sampling to compare with
    if recipes and memory == "auto" and not end and not mask and arch.family == FAMILY:  # recipes of SVD's pipeline
        runs += [(recipe, lambda recipe=recipe: simulate_recipe(arch, recipe, job)) for recipe in RECIPES]
    rows = []
    for index, (name, run) in enumerate(runs, 1):
        progress.note(f"Simulating {name} ({index}/{len(runs)})...")
        rows.append(run())
        done = "from the cache" if rows[-1].cached else f"{rows[-1].seconds:.1f} s"
        progress.note(f"  {name}: {done}")
    report = PlanReport(model=model, job=job, steps=steps, rows=rows, free_bytes=free_bytes, chain=chain)
    if chain.upscaler is not None:  # diffusers' recipes have no upscaler: the profiles' tiles stand in
        progress.note(f"Simulating {upscaler}'s tiles per profile...")
        costs = {}
        for row in rows:
            tile = tile_for(row.name if row.name in PROFILE_ORDER else "high")
            if tile not in costs:
                costs[tile] = upscale_cost(tile, job.width, job.height, chain.upscaler, dtype)
            report.upscale[row.name] = costs[tile]
    if free_bytes is not None and memory == "auto":
        name, reason = pick_profile(free_bytes, [(r.name, report.peak_bytes(r)) for r in rows[: len(profiles)]])
        report.auto, report.auto_reason = name, reason
        if weights == "full" and rows[profiles.index(name)].offload:
            faster = [plan_for(p) for p in profiles[: profiles.index(name)]]

            def simulate_fp8(arch, plan, job):
                progress.note(f"Simulating {plan.profile} with fp8 weights...")
                return simulate(arch, plan, job)

            def chain_peak(profile: str, row: Simulation) -> int:  # the upscaler's tiles peak on their own
                return max(row.peak_bytes, report.upscale.get(profile, (0, 0))[0])

            report.fp8_would_fit = fp8_would_fit(arch, job, free_bytes, faster, simulate_fp8, chain_peak)
    return report


def _chain(job: Job, extend: int, post: Request) -> Chain:
    """The stages around the animate stage: extend's clips, then the post stages in their order (stages/post.py),
    each one's frames counted from the one before; the upscaler is the stage that costs device time."""
    if post.upscale > 1 and post.upscaler not in NETWORKS:
        raise UsageError(
            f"{ref('upscaler')} {post.upscaler}: svd plan simulates the registry's upscalers "
            f"({', '.join(NETWORKS)}); name one of them.",
            option="upscaler",
        )
    frames, into = job.frames + extend * (job.frames - 1), {}  # the frame two clips share appears once
    for stage in wanted_stages(post):
        into[stage.name] = frames
        frames = stage.frames_after(frames, post)
    upscaler = post.upscaler if "upscale" in into else None
    return Chain(clips=1 + extend, upscaler=upscaler, upscaled_frames=into.get("upscale", 0), output_frames=frames)
