"""`svd bench`: one generation per memory profile and per diffusers recipe, timed side by side in one process.

The model is the full-size SVD architecture (or the tiny one for a quick check) with random weights: the
same layers and shapes as the real checkpoints, so the same FLOPs and memory traffic; only the pictures are
noise. Rows:
- high / balanced / low / min: `svd animate` with that memory profile, on the same image and seed; with levers
  after a `+`: the feature cache (`cache3`), TAESD's decoder (`taesd`), the live preview (`preview`, written to
  a temporary folder), AnimateLCM's sampler at its registry entry's steps without CFG (`lcm`; the UNet is the
  same architecture, so the same work), or the UNet's weights stored in fp8 (`fp8`, on a copy of the UNet),
  e.g. `high+cache3+taesd`.
- diffusers: `StableVideoDiffusionPipeline` as its docs show it, `.to(device)` and `decode_chunk_size=8`.
- diffusers-lowmem: its low-memory recipe, `enable_model_cpu_offload()`, `unet.enable_forward_chunking()`,
  `decode_chunk_size=2` (needs a GPU).
For each row: seconds per denoising step, end-to-end seconds (image in, frames out; no video encoding),
peak allocated and reserved device memory (CUDA, reset between rows) or peak resident memory (CPU), and
ratios to the `diffusers` row.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ._version import __version__
from .errors import OptionError, first_line
from .families import FAMILIES
from .io.video import write_json
from .kinds import VIDEO
from .memory import PROFILE_ORDER, estimate_peak_bytes, job_shape, plan_for
from .memory.storage import store_weights
from .models.architectures import FAMILY, build_random_pipeline
from .models.compiled import CLOCK, compile_unet
from .models.decoder import new_decoder
from .models.loading import dtype_name, resolve_device, resolve_dtype
from .models.post import PostModel
from .models.sources import ModelSource
from .options import GenerationSettings
from .paths import cache_dir
from .progress import NullProgress, Progress
from .registry import get_entry

RANDOM_WEIGHTS_NOTE = (
    "Random weights with the real architecture: same FLOPs and memory traffic as the released checkpoints; "
    "the frames are noise."
)
ANCHORS = ("diffusers", "diffusers-lowmem")
ANIMATELCM_ENTRY = "animatelcm-svd-xt"  # the registry entry whose sampler, steps and guidance the lcm lever uses


class _StepClock(Progress):
    """Timestamps the denoising stage through the generation's progress callbacks."""

    def __init__(self) -> None:
        self.denoise_start = self.denoise_end = None
        self.decode_seconds = 0.0  # every decode stage's time (a NaN guard's second decode too)
        self.stage = self.stage_start = None

    def start(self, stage: str, total: int | None = None) -> None:
        self.stage, self.stage_start = stage, time.perf_counter()
        if stage == "denoise":
            self.denoise_start = self.stage_start

    def end(self) -> None:
        now = time.perf_counter()
        if self.stage == "denoise" and self.denoise_start is not None and self.denoise_end is None:
            self.denoise_end = now
        if self.stage == "decode" and self.stage_start is not None:
            self.decode_seconds += now - self.stage_start
        self.stage = None


class PeakMemory:
    """Peak memory between reset() and read(): CUDA allocator statistics, or the process's peak RSS."""

    def __init__(self, device) -> None:
        self.device = device

    def reset(self) -> None:
        import torch

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()

    def read(self) -> dict:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return {
                "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
            }
        return {"peak_rss_bytes": _peak_rss()}


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):  # pragma: no cover - Windows
        return None


def run_bench(
    arch: str,
    frames: int,
    width: int,
    height: int,
    steps: int,
    rows: list[str],
    device: str = "auto",
    dtype: str = "auto",
    out: Path | None = None,
    image_path: Path | None = None,
    repeat: int = 1,
    *,
    progress: Progress | None = None,
) -> dict:
    """Run every row, write the JSON; return the results (`progress` hears of each row as it starts and fails).

    With `repeat` > 1 the rows run round-robin (high, balanced, ..., diffusers, high, balanced, ...), so slow
    drifts of the machine (other load, thermals) hit every row alike; each row reports the min and median.
    """
    import diffusers
    import torch
    from PIL import Image

    from .io.images import fit_image

    rows = [r.strip() for r in rows if r.strip()]
    unknown = [r for r in rows if r not in ANCHORS and Levers.of(r) is None]
    if unknown:
        raise OptionError("profiles", unknown[0], f"rows are {', '.join(PROFILE_ORDER + ANCHORS)}, or a profile "
                          f"with levers ({', '.join(LEVERS)}), e.g. high+cache3+taesd.")  # fmt: skip
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    device_name = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else _cpu_name()
    progress = progress or NullProgress()
    progress.note(f"svd bench: {arch} architecture, {frames} frames {width}x{height}, {steps} steps, "
                  f"{dtype_name(torch_dtype)} on {device_name}")  # fmt: skip
    progress.note(RANDOM_WEIGHTS_NOTE)

    pipe = build_random_pipeline(arch, device="cpu", dtype=torch_dtype)
    source = ModelSource(name=f"random-{arch}", path=Path("."), kind=VIDEO, family=FAMILY)
    model = FAMILIES[FAMILY].adapter(source, pipe, torch_device, torch_dtype)
    image_path = image_path or _example_image()
    image = fit_image(Image.open(image_path).convert("RGB"), width, height, "crop", (255, 255, 255))
    settings = GenerationSettings.family_defaults(
        FAMILY, frames=frames, steps=steps, seed=0, width=width, height=height
    )
    pipe.set_progress_bar_config(disable=True)
    meter = PeakMemory(torch_device)
    results: list[dict] = []
    # Kernels, allocator and caches warm up once, outside every row.
    progress.note("Warm-up run (1 step, not measured)...")
    _run_ours(model, Levers("high"), image, settings.replace(steps=1), meter)

    runs: dict[str, list[dict]] = {row: [] for row in rows}
    for round_ in range(repeat):
        for row in rows:
            progress.note(f"Row {row}" + (f" (round {round_ + 1} of {repeat})" if repeat > 1 else "") + "...")
            if row not in ANCHORS:
                result = _run_ours(model, Levers.of(row), image, settings, meter, row)
            else:
                result = _run_diffusers(model, row, image, settings, meter)
            runs[row].append(result)
            if result.get("error"):
                progress.note(f"  {row}: {result['error']}")
    results = [_combine(runs[row]) for row in rows]

    _add_ratios(results)
    report = {
        "svd_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name,
        "device_type": torch_device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": diffusers.__version__,
        "arch": arch,
        "frames": frames,
        "width": width,
        "height": height,
        "steps": steps,
        "repeat": repeat,
        "dtype": dtype_name(torch_dtype),
        "note": RANDOM_WEIGHTS_NOTE,
        "rows": results,
    }
    path = out or _default_out(device_name)
    path.parent.mkdir(parents=True, exist_ok=True)

    write_json(report, path)
    progress.note(f"Results written to {path}")
    return report


# The levers a row of ours may add to its profile, after a "+" (cache takes its interval: cache2 ... cache10).
LEVERS = ("cacheN", "taesd", "preview", "lcm", "fp8", "compile")


@dataclass(frozen=True)
class Levers:
    """One of our rows: a memory profile, and the speed levers on it."""

    profile: str
    cache: int = 1
    taesd: bool = False
    preview: bool = False
    animatelcm: bool = False
    fp8: bool = False
    compile: bool = False

    @classmethod
    def of(cls, row: str) -> Levers | None:
        """The levers of a row ("high+cache3+taesd"); None for anything that is not one."""
        profile, *levers = row.split("+")
        intervals = [int(m.group(1)) for lever in levers if (m := re.fullmatch(r"cache([2-9]|10)", lever))]
        flags = {name: name in levers for name in ("taesd", "preview", "lcm", "fp8", "compile")}
        if profile not in PROFILE_ORDER or len(levers) != len(intervals) + sum(flags.values()) or len(intervals) > 1:
            return None
        return cls(profile, intervals[0] if intervals else 1, flags["taesd"], flags["preview"], flags["lcm"],
                   flags["fp8"], flags["compile"])  # fmt: skip

    def settings(self, settings: GenerationSettings) -> GenerationSettings:
        """The row's generation settings: AnimateLCM's steps and guidance from its registry entry."""
        if self.animatelcm:
            lcm = get_entry(ANIMATELCM_ENTRY).defaults
            settings = settings.replace(sampler=lcm["sampler"], steps=lcm["steps"], min_cfg=lcm["min_cfg"],
                                        max_cfg=lcm["max_cfg"])  # fmt: skip
        return settings.replace(cache=self.cache)

    def savers(self) -> list[str]:
        names = [f"feature cache {self.cache}"] if self.cache > 1 else []
        names += ["TAESD's decoder"] if self.taesd else []
        names += ["live preview"] if self.preview else []
        names += ["fp8 weights"] if self.fp8 else []
        names += ["compiled blocks"] if self.compile else []
        return names + (["AnimateLCM sampler"] if self.animatelcm else [])


def _tiny_decoder(model) -> PostModel:
    """TAESD's architecture with random weights, on the model's device: the same work as the real file."""
    import torch

    decoder = PostModel("taesd", Path("."), new_decoder().to(model.dtype).eval(), torch.device("cpu"), model.dtype)
    decoder.place(model.device)
    return decoder


def _with_changed_unet(model, change):
    """The model with a copy of its UNet that `change` alters in place (fp8 storage, compiled blocks: neither can
    be undone, and the other rows must keep the UNet as it is)."""
    import copy

    pipe = model.pipe
    unet = copy.deepcopy(pipe.unet).to("cpu")
    change(unet)
    changed = type(pipe)(**{**pipe.components, "unet": unet})
    return FAMILIES[FAMILY].adapter(model.source, changed, model.device, model.dtype)


def _run_ours(model, levers: Levers, image, settings, meter: PeakMemory, name: str | None = None) -> dict:
    import tempfile

    from .stages.animate import VideoModel
    from .stages.hooks import LivePreview

    plan = plan_for(levers.profile)
    if levers.fp8:
        model = _with_changed_unet(model, lambda unet: store_weights(unet, "fp8", model.dtype))
    if levers.compile:
        model = _with_changed_unet(model, compile_unet)
    video_model = VideoModel(model, plan)
    settings = levers.settings(settings)
    if levers.taesd:
        video_model.decoder = _tiny_decoder(model)
    compile_seconds = None
    if levers.compile:  # compiled on a step of its own first, timed apart: the row measures compiled steps
        CLOCK.take()
        video_model(image, settings.replace(steps=1), _StepClock())
        compile_seconds = CLOCK.take()
    clock = _StepClock()
    meter.reset()
    error = None
    with tempfile.TemporaryDirectory(prefix="svd-bench-") as folder:
        preview = None
        if levers.preview:
            preview = LivePreview(Path(folder) / "bench.preview.webp", _tiny_decoder(model), settings.fps, clock)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            video_model(image, settings, clock, preview=preview)
        except Exception as exc:  # an OOM in one row must not lose the other rows
            error = f"{type(exc).__name__}: {first_line(exc)}"
        _sync(model.device)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    memory = meter.read()
    video_model.placement.release()
    estimate = estimate_peak_bytes(plan, job_shape(model, settings.frames, settings.width, settings.height))
    savers = plan.savers() + levers.savers()
    row = _row(name or levers.profile, savers, seconds, clock, settings.steps, memory, error, estimate, cpu_seconds)
    return row | ({"compile_seconds": round(compile_seconds, 1)} if compile_seconds is not None else {})


def _run_diffusers(model, row: str, image, settings, meter: PeakMemory) -> dict:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from .memory.feedforward import set_feed_forward_chunking

    pipe, device = model.pipe, model.device
    # Undo our configuration: diffusers' default attention, no chunking, weights on the CPU.
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    set_feed_forward_chunking(pipe.unet, None)
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        module.to("cpu")
    if row == "diffusers-lowmem" and device.type != "cuda":
        return _row(row, [], None, None, settings.steps, {}, "skipped: model CPU offload needs a GPU", None)
    times: list[float] = []

    def on_step(_pipe, i, t, kwargs):
        times.append(time.perf_counter())
        return kwargs

    if row == "diffusers":
        pipe.to(device)
        decode_chunk, recipe = 8, [".to(device)", "decode_chunk_size=8"]
    else:
        pipe.enable_model_cpu_offload(device=device)
        pipe.unet.enable_forward_chunking()
        decode_chunk, recipe = (
            2,
            ["enable_model_cpu_offload()", "unet.enable_forward_chunking()", "decode_chunk_size=2"],
        )
    meter.reset()
    started, cpu_started = time.perf_counter(), time.process_time()
    error = None
    try:
        with torch.no_grad():
            pipe(
                image, height=settings.height, width=settings.width, num_frames=settings.frames,
                num_inference_steps=settings.steps, fps=settings.fps, motion_bucket_id=settings.motion_bucket,
                noise_aug_strength=settings.noise_aug, decode_chunk_size=decode_chunk,
                generator=torch.Generator("cpu").manual_seed(settings.seed), output_type="np",
                callback_on_step_end=on_step,
            )  # fmt: skip
    except Exception as exc:
        error = f"{type(exc).__name__}: {first_line(exc)}"
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    memory = meter.read()
    if row == "diffusers-lowmem":
        pipe.remove_all_hooks()
        pipe.unet.disable_forward_chunking()
    for module in (pipe.unet, pipe.vae, pipe.image_encoder):
        module.to("cpu")
    clock = _StepClock()
    if len(times) >= 2:
        # Per-step time from the callbacks (first step's start is not observable: use the mean interval).
        clock.denoise_start, clock.denoise_end = times[0] - (times[-1] - times[0]) / (len(times) - 1), times[-1]
    return _row(row, recipe, seconds, clock, settings.steps, memory, error, None, cpu_seconds)


def _row(name, savers, seconds, clock, steps, memory, error, estimate, cpu_seconds=None) -> dict:
    per_step = None
    if clock is not None and clock.denoise_start is not None and clock.denoise_end is not None:
        per_step = (clock.denoise_end - clock.denoise_start) / steps
    row = {
        "row": name,
        "savers": savers,
        "seconds": round(seconds, 3) if seconds is not None else None,
        "seconds_per_step": round(per_step, 4) if per_step is not None else None,
        **memory,
    }
    if clock is not None and clock.decode_seconds:  # our rows; diffusers' pipeline reports no decode stage
        row["decode_seconds"] = round(clock.decode_seconds, 3)
    if cpu_seconds is not None:
        # Process CPU time: on a shared machine, less disturbed by other load than wall time (run single-threaded,
        # OMP_NUM_THREADS=1, so it is also the wall time the row would take alone on one core).
        row["cpu_seconds"] = round(cpu_seconds, 3)
    if estimate is not None:
        row["estimated_peak_bytes"] = estimate
    if error:
        row["error"] = error
    return row


def _combine(runs: list[dict]) -> dict:
    """One row from its repeated runs: `seconds` and `seconds_per_step` are medians, with every run's time and
    the minimum alongside; memory is the largest peak."""
    import statistics

    row = dict(runs[0])
    if len(runs) == 1:
        return row
    seconds = [r["seconds"] for r in runs if r.get("seconds") is not None and not r.get("error")]
    per_step = [r["seconds_per_step"] for r in runs if r.get("seconds_per_step") is not None and not r.get("error")]
    if seconds:
        row["seconds_runs"] = seconds
        row["seconds"] = round(statistics.median(seconds), 3)
        row["seconds_min"] = min(seconds)
    cpu = [r["cpu_seconds"] for r in runs if r.get("cpu_seconds") is not None and not r.get("error")]
    if cpu:
        row["cpu_seconds_runs"] = cpu
        row["cpu_seconds"] = round(statistics.median(cpu), 3)
        row["cpu_seconds_min"] = min(cpu)
    if per_step:
        row["seconds_per_step"] = round(statistics.median(per_step), 4)
        row["seconds_per_step_min"] = min(per_step)
    for key in ("peak_rss_bytes", "peak_allocated_bytes", "peak_reserved_bytes"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            row[key] = max(values)
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        row["error"] = errors[0]
    return row


def _add_ratios(results: list[dict]) -> None:
    anchor = next((r for r in results if r["row"] == "diffusers" and not r.get("error")), None)
    if anchor is None:
        return
    key = "peak_allocated_bytes" if "peak_allocated_bytes" in anchor else "peak_rss_bytes"
    for r in results:
        if r.get("seconds") and anchor.get("seconds"):
            r["time_vs_diffusers"] = round(r["seconds"] / anchor["seconds"], 3)
        if r.get("seconds_min") and anchor.get("seconds_min"):
            r["time_vs_diffusers_min"] = round(r["seconds_min"] / anchor["seconds_min"], 3)
        for suffix in ("", "_min"):
            if r.get(f"cpu_seconds{suffix}") and anchor.get(f"cpu_seconds{suffix}"):
                ratio = r[f"cpu_seconds{suffix}"] / anchor[f"cpu_seconds{suffix}"]
                r[f"cpu_time_vs_diffusers{suffix}"] = round(ratio, 3)
        if r.get(key) and anchor.get(key):
            r["memory_vs_diffusers"] = round(r[key] / anchor[key], 3)


def _example_image() -> Path:
    """A real photo to condition on: the repo's example if present, else a generated gradient."""
    here = Path(__file__).resolve().parent.parent / "examples" / "coffee.png"
    if here.is_file():
        return here
    from PIL import Image

    path = cache_dir() / "bench-gradient.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        Image.linear_gradient("L").convert("RGB").resize((1024, 576)).save(path)
    return path


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return "CPU " + (platform.processor() or platform.machine())


def _default_out(device_name: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    folder = Path("benchmarks") / "results"
    return (folder if folder.is_dir() else Path(".")) / f"{slug}.json"
