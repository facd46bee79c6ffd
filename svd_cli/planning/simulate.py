"""Know the GPU without one: run the real generation code on fake tensors and count device bytes and FLOPs.

`simulate(arch, plan, job)` builds the model's architecture with no weights (parameters are fake tensors of
the run's dtype: shapes, no data) and runs the same `VideoModel` a real video runs: the same savers, placement
and offload, CFG split, feed-forward chunking, decode chunking and seam-free VAE tiling. Everything happens
under `torch._subclasses.fake_tensor.FakeTensorMode`, with device "meta" playing the GPU and fake "cpu"
tensors standing for weights waiting in host memory. Two counters watch every operation:

- device bytes: a `TorchDispatchMode` adds the bytes of every new storage an operation puts on "meta" (the
  GPU) and a `weakref.finalize` on that storage subtracts them when it is freed. Weights moved onto the device
  by the placement are counted the same way (they are copies onto "meta"). The result is the peak of live
  tensor bytes, what `torch.cuda.max_memory_allocated` would report without the caching allocator's rounding.
- FLOPs: the formulas of `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions, attention),
  applied in the same dispatch mode (a second mode would double the simulation's time).

Attention is counted as the kernel that would really run. On a CUDA GPU, SDPA runs flash (fp16/bf16) or
memory-efficient attention, which allocate only the output and a small logsumexp; svd's `sliced` attention is
only chosen where those kernels are missing (Apple MPS, old GPUs), so it, and every SDPA call of a simulation
of such a GPU (`gpu="mps"`), runs PyTorch's math kernel, which holds the whole score matrix.

What cannot run on fake tensors runs on real ones, outside the fake mode, and is tiny: the scheduler's
timesteps and its per-step bookkeeping (`set_timesteps` and `step` index tensors with `nonzero`; the latents
it updates stay fake and on the device) and the CLIP feature extractor's normalisation of one 224x224 image
(it goes through numpy; it gets a real zero image of the same shape, then its output continues as fake).
The video processor's `preprocess` (the PIL image to a CPU tensor) runs on real tensors too, as it does
on the CPU in a real run; its output moves to the device under the fake mode. The last step of a video,
converting the decoded frames to numpy, is where the simulation stops.

Work a video repeats on same-shaped tensors is simulated once and replayed (`_Replays`): the second CFG half,
same-sized decode chunks, the same-sized tiles of a tiled pass, a chunked feed-forward's slices, and UNet
blocks of the same structure (across levels, and across rows of `svd plan`). A replay adds the recorded peak
above the live bytes it starts from, the recorded FLOPs and an empty output of the same layout, so every
count equals a full run's (svd-xt's default table: identical bytes and FLOPs, a quarter of the time). Under
layer-by-layer offload the UNet's blocks and feed-forward slices run every time: a replay would skip their
layers' offload hooks, whose prefetch carries from one layer to the next (`_order_traced`).

One denoising step is simulated; a video's FLOPs are encode + steps x step + decode. Results are cached on
disk in svd's cache folder, keyed by the architecture's config hash, frames, size, dtype, plan, and the svd,
torch and diffusers versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .._version import __version__
from ..errors import UsageError, first_line, ref
from ..families import FAMILIES
from ..kinds import VIDEO, folder_type
from ..memory.profiles import PROFILE_ORDER, MemoryPlan, gib, plan_for
from ..memory.storage import store_weights
from ..models.architectures import (
    ARCHITECTURES,
    SV3D_ARCHITECTURES,
    SVD_SCHEDULER,
    architecture_family,
    component_configs,
)
from ..models.decoder import new_decoder
from ..models.loading import dtype_name
from ..models.post import PostModel
from ..models.quiet import quiet_transformers
from ..models.sources import ModelSource
from ..options import GenerationSettings
from ..paths import cache_dir
from ..progress import Progress
from ..registry import get_entry, load_registry

SIM_VERSION = 5  # bump when what is counted changes, so cached results are recomputed (3: transfers, 5: streams)
RECIPES = ("diffusers", "diffusers-lowmem")
RECIPE_DESCRIPTIONS = {
    "diffusers": [".to(device)", "decode_chunk_size=8"],
    "diffusers-lowmem": ["enable_model_cpu_offload()", "unet.enable_forward_chunking()", "decode_chunk_size=2"],
}

# Dense fp16 tensor-core peaks, TFLOPS, with FP32 accumulation (what PyTorch's fp16 matmuls and convolutions
# use). Data-centre parts: NVIDIA's datasheets (H100 SXM5 989.4, A100 SXM4 312). GeForce parts: NVIDIA's Ada and
# Ampere architecture whitepapers, "Peak FP16 Tensor TFLOPS with FP32 Accumulate", dense (RTX 4090 165.2;
# RTX 3060 25.6, half its 51.2 with FP16 accumulation).
GPU_FP16_TFLOPS = {"H100": 989.4, "A100": 312.0, "RTX 4090": 165.2, "RTX 3060": 25.6}
# Host <-> device copies, effective bytes per second of a x16 link (about 80% of the raw 31.5 and 15.8 GB/s). The
# floors use PCIe 4.0, which every GPU above has at least; a card in a PCIe 3.0 slot gets the slower figure.
PCIE_BYTES_PER_SECOND = {"PCIe 4.0 x16": 25e9, "PCIe 3.0 x16": 12e9}
FLOOR_LINK = "PCIe 4.0 x16"
# Memory on the card beyond the simulated tensors.
CUDA_CONTEXT_BYTES = 512 * 2**20  # CUDA context + cuBLAS/cuDNN handles, before the first tensor
WORKSPACE_BYTES = 256 * 2**20  # cuBLAS / cuDNN / attention workspaces
ALLOCATOR_FACTOR = 1.10  # the caching allocator's block rounding and fragmentation over live bytes
CARD_SIZES_GB = (4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 80)  # nominal sizes, GiB as NVIDIA counts them


class SimulationError(Exception):
    """The simulation could not run this architecture or plan (callers fall back to the analytic estimate)."""


class UnknownArchitectureError(UsageError):
    """`model` is neither a built-in architecture name nor a folder with diffusers component configs."""

    def __init__(self, model: str, known: tuple[str, ...]):
        super().__init__(
            f"{ref('model')} {model}: not a built-in architecture ({', '.join(known)}) nor a folder holding a "
            "diffusers model's component configs (unet/config.json, vae/config.json, image_encoder/config.json).",
            option="model",
            model=model,
            known=known,
        )


# --- architectures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The component configs that decide every shape, and the family that builds and runs them; no weights."""

    name: str
    family: str  # families/: its components are built and run by it
    components: dict[str, dict]  # component folder (unet, vae, ...) -> its config
    scheduler: dict

    @property
    def unet(self) -> dict:
        return self.components["unet"]

    def key(self) -> str:
        """A hash of the shapes: config values, without bookkeeping keys (paths, versions)."""

        def shapes(config: dict) -> dict:
            skip = {"transformers_version", "architectures", "torch_dtype", "dtype", "name_or_path"}
            return {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}

        parts = [shapes(c) for c in self.components.values()]
        blob = json.dumps(parts, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


BUILT_IN_ALIASES = {"svd-xt-1.1": "svd-xt"}  # same architecture, fine-tuned weights


def architecture_for(model: str) -> Architecture:
    """The architecture of a built-in model name or of a local diffusers folder (its config files only)."""

    name = BUILT_IN_ALIASES.get(model, model)
    if name not in ARCHITECTURES:  # a registry entry over a built-in one's folders (AnimateLCM, a single file)
        name = _architecture_of_entry(name) or name
    if name in ARCHITECTURES or name in SV3D_ARCHITECTURES:
        return Architecture(model, architecture_family(name), component_configs(name), dict(SVD_SCHEDULER))
    folder = Path(model).expanduser()
    known = tuple(sorted((*ARCHITECTURES, *SV3D_ARCHITECTURES, *BUILT_IN_ALIASES)))
    found = folder_type(folder) if folder.is_dir() else None
    if found is None or found[1] is None:  # not a folder, or not one of a video model family's
        raise UnknownArchitectureError(model, known)
    family = found[1]
    try:
        configs = {
            part: json.loads((folder / part / "config.json").read_text(encoding="utf-8"))
            for part in FAMILIES[family].components
        }
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnknownArchitectureError(model, known) from exc
    return Architecture(folder.name, family, configs, scheduler)


def _architecture_of_entry(model: str) -> str | None:
    """The built-in architecture a registry entry shares its repo with (a replacement UNet such as AnimateLCM's
    has the same shapes as the one it replaces)."""

    entry = get_entry(model)
    if entry is None or entry.repo is None:
        return None
    registry = load_registry()
    return next((name for name in ARCHITECTURES if name in registry and registry[name].repo == entry.repo), None)


def architecture_of(pipe, name: str, family: str) -> Architecture:
    """The architecture of a loaded pipeline of `family`, read from its components' configs."""
    configs = {}
    for part in FAMILIES[family].components:
        config = getattr(pipe, part).config  # diffusers': a dict; transformers': a PretrainedConfig
        configs[part] = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return Architecture(name, family, configs, dict(pipe.scheduler.config))


# --- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    frames: int
    width: int
    height: int
    dtype: str = "fp16"  # fp16 | bf16 | fp32
    gpu: str = "cuda"  # cuda: flash / memory-efficient SDPA; mps: the math kernel everywhere
    guided: bool = True  # classifier-free guidance (max cfg above 1): two UNet batches a step, else one
    cache: int = 1  # the feature cache's interval (1: off); above 1 a reuse step is simulated after the full one
    tiny_decoder: bool = False  # TAESD's decoder (decoder = taesd) in place of the model's VAE decoder
    weights: str = "full"  # how the UNet's weights are stored (fp8: memory/storage.py)
    end: bool = False  # an end picture (end): every step samples from both ends, two guided passes
    mask: bool = False  # a cinemagraph's mask: the photo's clean latents encoded too, blended around every step


@dataclass
class Simulation:
    """Peak live device bytes and FLOPs of one video, per stage and in total."""

    name: str  # a profile or a diffusers recipe
    savers: list[str]
    peak_bytes: int  # of the whole video
    stage_peak_bytes: dict[str, int]  # encode, step (one full denoising step), reuse_step (with a cache), decode
    stage_flops: dict[str, int]
    weights_bytes: int  # every parameter at the run's dtype, wherever it lives
    seconds: float = 0.0  # how long the simulation took (0 when it came from the cache)
    cached: bool = False
    # Bytes copied between host and device: per stage, what each repeat of the stage copies (a sequential
    # offload's weights, moved in for every call; inputs; outputs), and once a video, the weights a placement or
    # an offload hook moves onto the device and leaves there until another component needs the room.
    stage_transfer_bytes: dict[str, int] = field(default_factory=dict)
    placement_transfer_bytes: int = 0
    # Of each stage's copies, those made on a copy stream of their own beside the computation (streamed offload's
    # layer weights, the next layer's copied while the current one computes).
    stage_streamed_bytes: dict[str, int] = field(default_factory=dict)

    def flops(self, steps: int, cache: int = 1) -> int:
        """FLOPs of a whole video of `steps` denoising steps; with a feature cache every `cache`-th step is full
        and the others are reuse steps (a row simulated without one, diffusers' recipes, has only full steps)."""
        return _per_video(self.stage_flops, steps, cache)

    def transfer_bytes(self, steps: int, cache: int = 1) -> int:
        """Host <-> device bytes of a whole video: the placement's once, each stage's as often as it runs."""
        return self.placement_transfer_bytes + _per_video(self.stage_transfer_bytes, steps, cache)

    def streamed_bytes(self, steps: int, cache: int = 1) -> int:
        """Of `transfer_bytes`, those copied beside the computation (streamed offload)."""
        return _per_video(self.stage_streamed_bytes, steps, cache)

    @property
    def offload(self) -> bool:
        """Whether the weights wait in host memory and move to the device on use (model, streamed or sequential
        offload)."""
        return any("offload" in saver for saver in self.savers)

    def as_json(self, steps: int, cache: int = 1) -> dict:
        data = asdict(self)
        data["steps"] = steps
        data["flops"] = self.flops(steps, cache)
        data["tflops"] = round(data["flops"] / 1e12, 2)
        data["peak_gib"] = round(self.peak_bytes / 2**30, 2)
        data["fits_gb"] = fits_cards(self.peak_bytes)
        data["smallest_card_gib"] = data["fits_gb"][0] if data["fits_gb"] else None
        data["offload"] = self.offload
        data.update(transfer_fields(self.transfer_bytes(steps, cache), self.streamed_bytes(steps, cache)))
        data["time_floor_seconds"] = time_floors(data["flops"], data["transfer_bytes"], data["streamed_bytes"])
        return data


def _per_video(per_stage: dict[str, int], steps: int, cache: int) -> int:
    """A video's total of a per-stage count: encode, `steps` denoising steps (every `cache`-th one full, the
    others reuse steps, where the row simulated one) and decode."""
    full = -(-steps // cache) if "reuse_step" in per_stage else steps
    step, reuse = per_stage.get("step", 0), per_stage.get("reuse_step", 0)
    return per_stage.get("encode", 0) + full * step + (steps - full) * reuse + per_stage.get("decode", 0)


def transfer_fields(transfer_bytes: int, streamed_bytes: int = 0) -> dict:
    """A row's host <-> device copies as `--json` gives them: bytes, GiB and seconds on each link, and how many of
    those bytes are copied beside the computation."""
    return {
        "transfer_bytes": transfer_bytes,
        "streamed_bytes": streamed_bytes,
        "transfer_gib": round(transfer_bytes / 2**30, 2),
        "transfer_seconds": {link: round(transfer_bytes / rate, 2) for link, rate in PCIE_BYTES_PER_SECOND.items()},
    }


def card_bytes_needed(peak_bytes: int) -> int:
    """Memory a card must have for a run whose live tensors peak at `peak_bytes`."""
    return int(peak_bytes * ALLOCATOR_FACTOR) + WORKSPACE_BYTES + CUDA_CONTEXT_BYTES


def free_bytes_needed(peak_bytes: int) -> int:
    """Free memory (as `torch.cuda.mem_get_info` reports it, the CUDA context already made) a run needs."""
    return int(peak_bytes * ALLOCATOR_FACTOR) + WORKSPACE_BYTES


def fits_cards(peak_bytes: int) -> list[int]:
    return [gb for gb in CARD_SIZES_GB if card_bytes_needed(peak_bytes) <= gb * 2**30]


def time_floors(flops: int, transfer_bytes: int = 0, streamed_bytes: int = 0) -> dict[str, float]:
    """Seconds per video if every FLOP ran at the GPU's dense fp16 tensor peak, plus the host <-> device copies
    at FLOOR_LINK's rate. Copies on the compute stream (model offload's moves, inputs and outputs) add to the
    compute; the `streamed_bytes` among them, layer weights copied on a stream of their own while the layer
    before computes, overlap it, so only the longer of the two counts. No real run is this fast."""
    rate = PCIE_BYTES_PER_SECOND[FLOOR_LINK]
    blocking = (transfer_bytes - streamed_bytes) / rate
    return {
        gpu: round(max(flops / (tflops * 1e12), streamed_bytes / rate) + blocking, 2)
        for gpu, tflops in GPU_FP16_TFLOPS.items()
    }


# --- counters --------------------------------------------------------------------------------------------


def _dispatch_mode_base():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


class _DeviceBytes:
    """Live bytes of storages on the simulated device ("meta"), and their peaks (overall and per stage)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self.stage_peak = 0
        self.sizes: dict[int, int] = {}
        self.ignoring = 0  # > 0 while creating placeholders that hold no device memory
        self.flops = 0
        self.transfers = 0  # bytes copied between host ("cpu") and device ("meta")
        self.streamed = 0  # of those, copied on a copy stream beside the computation (streamed offload)
        self.uploads: dict[int, int] = {}  # storages a host-to-device copy made, while they live: their bytes
        self.stage_uploads: list[int] = []  # those made in the stage in progress
        self.stage_downloads = 0  # device-to-host bytes in the stage in progress

    def track(self, tensor) -> None:
        if tensor.device.type != "meta":
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.sizes:
            return
        # Storages made while ignoring (placeholders) stay uncounted, views of them included.
        n = 0 if self.ignoring else storage.nbytes()
        self.sizes[key] = n
        self.live += n
        self.peak = max(self.peak, self.live)
        self.stage_peak = max(self.stage_peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)
        self.uploads.pop(key, None)

    def upload(self, tensor) -> None:
        """`tensor` (already tracked) was copied from the host: remember its storage while it lives."""
        key = tensor.untyped_storage()._cdata
        if key in self.sizes:
            self.uploads[key] = tensor.numel() * tensor.element_size()
            self.stage_uploads.append(key)

    def moved_once(self) -> int:
        """Bytes of the stage in progress's copies that a repeat of the stage would not make again: those copied
        onto the device and still there (weights an offload hook moved in and left, however many steps follow),
        and every copy back to the host (an offload hook moving a component out to make room, or the finished
        frames; layer-by-layer offload drops its device copies without copying them back). The rest is copied again
        each time the stage repeats."""
        once = sum(self.uploads.get(key, 0) for key in set(self.stage_uploads)) + self.stage_downloads
        self.stage_uploads, self.stage_downloads = [], 0
        return once

    @contextlib.contextmanager
    def ignore(self) -> Iterator[None]:
        self.ignoring += 1
        try:
            yield
        finally:
            self.ignoring -= 1

    @contextlib.contextmanager
    def uncounted(self) -> Iterator[None]:
        """Work that leaves nothing behind and counts for nothing: no bytes, FLOPs or copies (see `_order_traced`)."""
        counts = (self.peak, self.stage_peak, self.flops, self.transfers, self.streamed, self.stage_downloads)
        uploads = list(self.stage_uploads)
        with self.ignore():
            yield
        self.peak, self.stage_peak, self.flops, self.transfers, self.streamed, self.stage_downloads = counts
        self.stage_uploads = uploads


def _counting_mode(counter: _DeviceBytes):
    """One dispatch mode for both counters: device bytes, and FLOPs with the formulas (and the decomposition
    rule) of `torch.utils.flop_counter.FlopCounterMode`, which as a second mode would double the simulation's
    time; tests/test_simulate.py checks the FLOPs equal FlopCounterMode's on a real run."""
    import torch
    from torch._C import DispatchKey
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import flop_registry

    device_op = torch.ops.prim.device.default
    to_copy, copy_ = torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default

    class CountDeviceBytesAndFlops(_dispatch_mode_base()):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            counted = packet in flop_registry
            if (
                not counted
                and func is not device_op
                and func.has_kernel_for_dispatch_key(DispatchKey.CompositeImplicitAutograd)
            ):
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            if counted:
                counter.flops += flop_registry[packet](*args, **kwargs, out_val=out)
            moved = None
            if func is to_copy or func is copy_:  # a copy between host and device is a transfer
                source, target = (args[0], out) if func is to_copy else (args[1], args[0])
                if isinstance(source, torch.Tensor) and {source.device.type, target.device.type} == {"cpu", "meta"}:
                    counter.transfers += target.numel() * target.element_size()
                    if target.device.type == "cpu":
                        counter.stage_downloads += target.numel() * target.element_size()
                    moved = target if func is to_copy and target.device.type == "meta" else None
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    counter.track(t)
            if moved is not None:
                counter.upload(moved)
            return out

    return CountDeviceBytesAndFlops()


class _StageMeter:
    """Splits the counters into stages at the generation's progress calls (or explicit marks)."""

    def __init__(self, counter: _DeviceBytes) -> None:
        self.counter = counter
        self.current: str | None = None
        self.flops0 = 0
        self.peaks: dict[str, int] = {}
        self.flops: dict[str, int] = {}
        self.transfers0 = 0
        self.transfers: dict[str, int] = {}  # per stage: the copies a repeat of the stage makes again
        self.streamed0 = 0
        self.streamed: dict[str, int] = {}  # per stage: of those, the ones on a copy stream
        self.placement = 0  # copies made once a video: weights moved onto the device and left there

    def mark(self, stage: str | None) -> None:
        """Close the stage in progress (if any) and open `stage` (None: just close)."""
        total, moved = self.counter.flops, self.counter.transfers
        if self.current is not None:
            name = self.current
            self.peaks[name] = max(self.peaks.get(name, 0), self.counter.stage_peak)
            self.flops[name] = self.flops.get(name, 0) + total - self.flops0
            once = self.counter.moved_once()
            self.placement += once
            self.transfers[name] = self.transfers.get(name, 0) + moved - self.transfers0 - once
            self.streamed[name] = self.streamed.get(name, 0) + self.counter.streamed - self.streamed0
        self.current = stage
        self.flops0, self.transfers0, self.streamed0 = total, moved, self.counter.streamed
        self.counter.stage_peak = self.counter.live


class _Replays:
    """Identical repeated calls of one unit of work (a decode chunk, a UNet call, a tile), simulated once.

    A video repeats the same work on same-shaped tensors: the two CFG halves of a step, the decode chunks
    (5 of 5 frames for 25 frames; 12 of 2 under `min`), and within a chunk the tiles of a pass, most of the
    same size. Their device bytes rise and fall the same way from wherever they start, so the first call of a
    signature records its peak above the live bytes it started from, its FLOPs and its output's layout; a
    later call with the same signature adds the same peak above its own start, the same FLOPs, and an empty
    output of the same layout (counted like any new tensor). A call is only recorded if all it leaves behind
    is its output (weights moved onto the device by an offload hook, or anything kept, would not repeat), so
    the counts equal a full run's. Calls nest: a recorded chunk's peak includes its replayed tiles'.
    """

    def __init__(self, counter: _DeviceBytes) -> None:
        self.counter = counter
        self.paused = False  # while work that counts for nothing runs: nothing recorded, nothing replayed

    def wrap(self, run, records: dict | None = None, context=None):
        """`run`, with repeated calls of the same `_signature` replayed. `records` may outlive this run (another
        row's); then `context()` must say everything else the call's work depends on (see `_decode_context`)."""
        records = {} if records is None else records

        def replayed(*args, **kwargs):
            key = _signature(args, kwargs)
            if key is not None and context is not None:
                key = (context(), key)
            return self.call(records, key, lambda: run(*args, **kwargs))

        return replayed

    def call(self, records: dict, key: tuple | None, run):
        """`run()` (a tensor or None), or the replay of the call recorded under `key` in `records`."""
        if key is None or self.paused:
            return run()
        if key in records:
            return self._replay(*records[key])
        c = self.counter
        live, peak, flops, moved, streamed = c.live, c.peak, c.flops, c.transfers, c.streamed
        c.peak = live  # the call's own peak, from where it starts
        try:
            out = run()
        finally:
            call_peak, c.peak = c.peak, max(peak, c.peak)
        tensor, boxed = (out[0], True) if isinstance(out, tuple) and len(out) == 1 else (out, False)
        if out is None and c.live == live:
            records[key] = (call_peak - live, c.flops - flops, c.transfers - moved, c.streamed - streamed, None)
        elif _sole_storage(tensor) and c.live - live == tensor.untyped_storage().nbytes():
            layout = (tensor.shape, tensor.stride(), tensor.dtype, tensor.device, boxed)
            records[key] = (call_peak - live, c.flops - flops, c.transfers - moved, c.streamed - streamed, layout)
        return out

    def _replay(self, rise: int, flops: int, transfers: int, streamed: int, layout: tuple | None):
        import torch

        c = self.counter
        c.peak = max(c.peak, c.live + rise)
        c.stage_peak = max(c.stage_peak, c.live + rise)
        c.flops += flops
        c.transfers += transfers  # a sequential or streamed offload's weight copies inside the call
        c.streamed += streamed
        if layout is None:
            return None
        shape, stride, dtype, device, boxed = layout
        out = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        return (out,) if boxed else out  # a block called with return_dict=False gives a 1-tuple


def _order_traced(run, counter: _DeviceBytes, replays: _Replays):
    """`run` (one denoiser call), its first call made once uncounted before the counted one.

    Streamed offload prefetches each layer's weights while the layer before it computes, in the order diffusers
    traces during the denoiser's first call: that call onloads each layer itself, every later one (the rest of a
    video) prefetches. Tracing the order first, the counted calls are the later ones, which peak higher by a
    layer's weights in flight, as a real video does from its second denoiser call on.
    """
    traced = False

    def traced_first(*args, **kwargs):
        nonlocal traced
        if not traced:
            traced = True
            replays.paused = True
            try:
                with counter.uncounted():
                    run(*args, **kwargs)
            finally:
                replays.paused = False
        return run(*args, **kwargs)

    return traced_first


def _replay_feed_forward_pieces(unet, replays: _Replays) -> None:
    """The layers of every feed-forward replayed where a chunked feed-forward (svd's token slices, diffusers'
    forward chunking) runs them again on a same-shaped slice. Wrapped after the placement, so an offload
    hook's weight copies are part of what is recorded (`_Replays` records nothing that leaves them behind)."""
    from diffusers.models.attention import FeedForward

    for module in unet.modules():
        if isinstance(module, FeedForward):
            for layer in module.net:
                if any(True for _ in layer.parameters()):  # the projections; dropout returns its input
                    layer.forward = replays.wrap(layer.forward)


# UNet blocks recorded in one row or at one level, replayed wherever a block of the same structure runs on
# the same shapes: an SVD UNet level repeats its transformer and resnet blocks, and the rows repeat levels.
_SHARED_BLOCKS: dict[tuple, tuple] = {}


def _replay_unet_blocks(unet, replays: _Replays, job: Job, math_attention: bool) -> None:
    """The UNet's spatio-temporal transformer and resnet blocks replayed across blocks, levels and rows of the
    same `_structure` and input shapes (wrapped after the placement and the savers, which `_structure` sees)."""
    from diffusers.models.resnet import SpatioTemporalResBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    for module in unet.modules():
        if isinstance(module, SpatioTemporalResBlock | TransformerSpatioTemporalModel):
            context = _block_context(module, job, math_attention)
            module.forward = replays.wrap(module.forward, _SHARED_BLOCKS, context)


def _block_context(module, job: Job, math_attention: bool):
    return lambda: (job.gpu, job.dtype, math_attention, _structure(module))


PLAIN = (bool, int, float, str)


def _structure(module) -> tuple:
    """Everything in a module's tree that its work on fake tensors can depend on, as it is now: each
    submodule's class and plain settings (heads, chunk sizes, eval mode), its tensors' shapes, dtypes and
    devices, its offload hook, its attention processor, and any forward put on the instance (svd's
    feed-forward chunking; the chunk size is in its closure)."""

    def plain(obj) -> tuple:
        return tuple(sorted((k, v) for k, v in vars(obj).items() if v is None or isinstance(v, PLAIN)))

    def tensors(table: dict) -> tuple:
        return tuple((n, tuple(t.shape), t.dtype, str(t.device)) for n, t in table.items() if t is not None)

    def closure(fn) -> tuple:
        values = []
        for cell in getattr(fn, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                if isinstance(cell.cell_contents, PLAIN):
                    values.append(cell.cell_contents)
        return (getattr(fn, "__qualname__", type(fn).__name__), *values)

    parts = []
    for name, m in module.named_modules():
        hook = getattr(m, "_hf_hook", None)
        processor = getattr(m, "processor", None)
        forward = m.__dict__.get("forward")
        parts.append(
            (
                name,
                type(m).__qualname__,
                plain(m),
                tensors(m._parameters),
                tensors(m._buffers),
                None
                if hook is None
                else (type(hook).__qualname__, plain(hook), str(getattr(hook, "execution_device", None))),
                None if processor is None else (type(processor).__qualname__, plain(processor)),
                None if forward is None else closure(forward),
            )
        )
    return tuple(parts)


@contextlib.contextmanager
def _replayed_tiles(replays: _Replays) -> Iterator[None]:
    """The tiled VAE's tiles replayed (see `_Replays`) where a pass repeats a tile's shapes.

    On fake tensors a tile's work depends on its shapes: the stage's input, the tile with its halo, its core
    (SVD's tiled stages normalise at their input's resolution, so the core's slice is the core's size
    wherever it starts), and the pass: which GroupNorm it gathers and how many statistics it already has.
    A gathering tile stops at its GroupNorm (None, nothing left behind); replayed, it stops the same way.
    Records are per stage function and go when it does (a new decode call makes new ones).
    """
    from ..memory import vae_tiling

    original = vae_tiling._run_one
    records: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def run_one(fn, x, t, tile_pass):
        def run():
            try:
                return original(fn, x, t, tile_pass)
            except vae_tiling._StopTile:
                return None

        shapes = (t.py1 - t.py0, t.px1 - t.px0, t.y1 - t.y0, t.x1 - t.x0)
        # The last pass (gather None) does what the pass before it did: that one's GroupNorm to gather was
        # one past the stage's last, so it ran every tile to the end with the same statistics.
        gather = len(tile_pass.stats) if tile_pass.gather is None else tile_pass.gather
        key = (*_signature((x,), {}), shapes, gather, len(tile_pass.stats))
        out = replays.call(records.setdefault(fn, {}), key, run)
        if out is None:
            tile_pass.reached = True
            raise vae_tiling._StopTile
        return out

    vae_tiling._run_one = run_one
    try:
        yield
    finally:
        vae_tiling._run_one = original


# Decode chunks recorded in one row, replayed in another that decodes the same chunks the same way (balanced
# and low decode the same 5-frame tiled chunks of the same job); keyed by `_decode_context`.
_SHARED_DECODES: dict[tuple, tuple] = {}


def _decode_context(arch: Architecture, job: Job, plan: MemoryPlan, math_attention: bool, decoder):
    """What a decode call's work depends on besides its latents: the architecture and job, the attention
    kernel, the plan's VAE tiling, and where the decoder's weights are as it starts (all on the device,
    moved whole, in every profile; an offload hook would stream them)."""
    fixed = ("decode", arch.key(), job, math_attention, plan.vae_tiling, plan.vae_tile)

    def context() -> tuple:
        weights = sorted({(str(p.device), str(p.dtype)) for p in decoder.parameters()})
        hooked = any(hasattr(m, "_hf_hook") for m in decoder.modules())
        return (*fixed, tuple(weights), hooked)

    return context


def _signature(args: tuple, kwargs: dict) -> tuple | None:
    """What a call's work depends on: tensors' layouts, modules' identities, plain values; None if unsure."""
    import torch
    from torch import nn

    def part(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.stride(), value.dtype, str(value.device))
        if isinstance(value, nn.Module):
            return ("module", id(value))
        if value is None or isinstance(value, bool | int | float | str):
            return ("value", type(value).__name__, value)
        raise TypeError(type(value).__name__)

    try:
        return (tuple(part(a) for a in args), tuple((k, part(v)) for k, v in sorted(kwargs.items())))
    except TypeError:
        return None


def _sole_storage(out) -> bool:
    """Whether `out` is one tensor that owns its whole storage (what a replay's empty tensor is)."""
    import torch

    return (
        isinstance(out, torch.Tensor)
        and out.storage_offset() == 0
        and out.untyped_storage().nbytes() == out.numel() * out.element_size()
    )


def _progress_for(meter: _StageMeter):

    class StageProgress(Progress):
        def start(self, stage: str, total: int | None = None) -> None:
            meter.mark({"encode": "encode", "denoise": "step", "decode": "decode"}.get(stage, meter.current))

    return StageProgress()


# --- pieces that run outside the fake mode ---------------------------------------------------------------


class _RealSchedulerBase:
    """A scheduler whose bookkeeping runs on real CPU tensors outside the fake mode (see module docstring)."""

    _inner_cls: type = object

    def __init__(self, inner) -> None:
        self.__dict__["_inner"] = inner

    @classmethod
    def from_config(cls, config, **kwargs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            return cls(cls._inner_cls.from_config(config, **kwargs))

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            return self._inner.set_timesteps(num_inference_steps, device="cpu", **kwargs)

    def _timestep(self, timestep):
        """Iterating `timesteps` under the fake mode made `timestep` fake; the loops walk the schedule in
        order, so the real one is the scheduler's current step."""
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(timestep, FakeTensor):
            index = self._inner.step_index if self._inner.step_index is not None else 0
            return self._inner.timesteps[index]
        return timestep

    def scale_model_input(self, sample, timestep, *args, **kwargs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            return self._inner.scale_model_input(sample, self._timestep(timestep), *args, **kwargs)

    def step(self, model_output, timestep, sample, *args, **kwargs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            return self._inner.step(model_output, self._timestep(timestep), sample, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["_inner"], name)


def _real_scheduler(scheduler):
    cls = type(f"Simulated{type(scheduler).__name__}", (_RealSchedulerBase,), {"_inner_cls": type(scheduler)})
    return cls(scheduler)


class _RealFeatureExtractor:
    """CLIP's image normalisation (numpy inside) on a real image of the fake input's shape."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __call__(self, images, **kwargs):
        import torch
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            real = torch.zeros(images.shape, dtype=images.dtype) if isinstance(images, torch.Tensor) else images
            return self._inner(images=real, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _RealPreprocessing:
    """The video processor's `preprocess` (PIL image to a CPU tensor; it checks values) on real tensors; what
    it returns is moved to the device under the fake mode like any tensor."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def preprocess(self, *args, **kwargs):
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():
            return self._inner.preprocess(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@contextlib.contextmanager
def _attention_kernels(math_everywhere: bool) -> Iterator[None]:
    """SDPA as the kernel a CUDA GPU would run (flash / memory-efficient), or the math kernel."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    aten = torch.ops.aten
    state = {"math": math_everywhere}

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if state["math"] or enable_gqa:
            return aten._scaled_dot_product_attention_math(
                query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
            )[0]
        if attn_mask is None and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256:
            return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, scale=scale)[0]
        return aten._scaled_dot_product_efficient_attention(
            query, key, value, attn_mask, False, dropout_p, is_causal, scale=scale
        )[0]

    F.scaled_dot_product_attention = sdpa
    try:
        yield state
    finally:
        F.scaled_dot_product_attention = original


class _StreamStandIn:
    """A CUDA stream's stand-in on the simulated GPU: copies are counted when made, so waiting does nothing."""

    def synchronize(self) -> None:
        pass


class _StreamBackend:
    """`TorchDeviceBackend` for the simulated GPU ("meta" has no `torch.meta` module): streams that do nothing."""

    Stream = _StreamStandIn

    def __init__(self, device) -> None:
        self.device = device

    def stream(self, stream):
        return contextlib.nullcontext()

    def current_stream(self) -> _StreamStandIn:
        return _StreamStandIn()

    def synchronize(self) -> None:
        pass


def _group_tensors(group) -> list[tuple]:
    """(module, name, is a parameter, host tensor) of every parameter and buffer a `ModuleGroup` moves: those of
    its modules, and the top level's own ones outside any layer (its loose `parameters` and `buffers`)."""
    found = []
    for module in [m for owner in group.modules for m in owner.modules()]:
        found += [(module, name, True, t.data) for name, t in module._parameters.items() if t is not None]
        found += [(module, name, False, t) for name, t in module._buffers.items() if t is not None]
    loose = {id(t) for t in (*group.parameters, *group.buffers)}
    for module in group.offload_leader.modules() if loose else ():
        found += [(module, name, True, t.data) for name, t in module._parameters.items() if id(t) in loose]
        found += [(module, name, False, t) for name, t in module._buffers.items() if id(t) in loose]
    return list({(id(m), n): (m, n, p, t) for m, n, p, t in found}.values())


@contextlib.contextmanager
def _group_offload_emulation(counter: _DeviceBytes) -> Iterator[None]:
    """diffusers' group offloading (streamed offload) on fake tensors, counted as on a CUDA GPU with streams.

    Three parts of `ModuleGroup` cannot run here and are emulated; the hooks that call them (which layer
    onloads when, the prefetch of the next layer once the first call has traced their order) run as they are:
    - the CUDA backend: "meta" has no `torch.meta` module, so streams are stand-ins (`_StreamBackend`);
    - the pinned host copies: the fake host weights are the copies (host memory is not what is counted);
    - the moves: `param.data = tensor` refuses a host tensor's device copy, so onloading rebinds each of the
      group's parameters and buffers to a copy on the device (counted as a transfer, like any copy onto
      "meta", and as streamed), and offloading rebinds them to their host tensors, dropping the device
      copies with nothing copied back, as diffusers does with streams.
    """
    try:
        import diffusers.hooks.group_offloading as grouping
    except ImportError:  # pragma: no cover - diffusers is a dependency
        yield
        return
    from torch import nn

    tensors: dict[int, list[tuple]] = {}  # id of a group -> its `_group_tensors`, taken before any move

    def rebind(group, device) -> None:
        if id(group) not in tensors:
            tensors[id(group)] = _group_tensors(group)
        for module, name, is_param, host in tensors[id(group)]:
            tensor = host if device is None else host.to(device)
            if device is not None and group.stream is not None:
                counter.streamed += tensor.numel() * tensor.element_size()
            if is_param:
                module._parameters[name] = nn.Parameter(tensor, requires_grad=False)
            else:
                module._buffers[name] = tensor

    patches = {
        (grouping, "TorchDeviceBackend"): _StreamBackend,
        (grouping.ModuleGroup, "_init_cpu_param_dict"): lambda group: {},
        (grouping.ModuleGroup, "onload_"): lambda group: rebind(group, group.onload_device),
        (grouping.ModuleGroup, "offload_"): lambda group: rebind(group, None),
    }
    originals = {key: getattr(*key) for key in patches}
    for (owner, name), value in patches.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name), value in originals.items():
            setattr(owner, name, value)


# --- building the fake model -----------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def _fake_pipeline(arch: Architecture, dtype):
    """The family's pipeline of `arch` whose parameters are fake CPU tensors of `dtype`, its helpers that
    compute on the CPU (scheduler, image preprocessing) on real tensors (call inside the fake mode)."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    family = FAMILIES[arch.family]
    with quiet_transformers():
        with unset_fake_temporarily(), torch.device("meta"):
            components = family.build_components(arch.components)
        for module in components.values():
            _fake_weights(module, dtype)
        with unset_fake_temporarily():
            pipe = family.assemble(components, arch.scheduler)
    # Attributes, not registered modules: the pipeline's config keeps naming the real classes.
    vars(pipe)["scheduler"] = _real_scheduler(pipe.scheduler)
    for helper, real in (("feature_extractor", _RealFeatureExtractor), ("video_processor", _RealPreprocessing)):
        if getattr(pipe, helper, None) is not None:
            vars(pipe)[helper] = real(getattr(pipe, helper))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fake_weights(module, dtype) -> None:
    """Give `module` (built on "meta") fake CPU parameters and buffers of `dtype` (call inside the fake mode)."""
    import torch
    from torch import nn

    module.eval().requires_grad_(False)
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                t = torch.empty(p.shape, dtype=dtype if p.is_floating_point() else p.dtype, device="cpu")
                m._parameters[name] = nn.Parameter(t, requires_grad=False)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = torch.empty(b.shape, dtype=dtype if b.is_floating_point() else b.dtype, device="cpu")


def _fake_tiny_decoder(dtype, device):
    """TAESD's decoder with fake weights, on the simulated device, behind the VideoModel's decoder interface."""
    import torch
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.device("meta"):
        network = new_decoder()
    _fake_weights(network, dtype)
    network.to(device)
    return PostModel("taesd", Path("."), network, device, dtype)


def _weights_bytes(pipe) -> int:
    """Bytes of the weights of every component the pipeline registered (its family's modules)."""
    modules = [module for module in pipe.components.values() if hasattr(module, "parameters")]
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    # The converter memoizes every operation's output (a fresh meta tensor) with a weak reference, which
    # nn.Module.to() refuses when it swaps a fake parameter for its moved copy; those memos are never reused.
    fake.fake_tensor_converter.set_tensor_memo = lambda t, v: None
    return fake


@contextlib.contextmanager
def _simulated(math_attention: bool) -> Iterator[_DeviceBytes]:
    """Fake mode under the counting mode; yields the counter."""
    import torch

    counter = _DeviceBytes()
    with (
        torch.no_grad(),
        _attention_kernels(math_attention),
        _group_offload_emulation(counter),
        _fake_mode(),
        _counting_mode(counter),
    ):
        yield counter


@contextlib.contextmanager
def _simulated_pipeline(arch: Architecture, dtype, math_attention: bool) -> Iterator[tuple]:
    """`_simulated`, with the fake pipeline of `arch` built first, outside the counting mode (its weights
    are fake CPU tensors, which hold no device memory; counting would only slow the creation of thousands of
    them). Yields the counter and the pipeline."""
    import torch

    counter = _DeviceBytes()
    with (
        torch.no_grad(),
        _attention_kernels(math_attention),
        _group_offload_emulation(counter),
        _fake_mode(),
    ):
        pipe = _fake_pipeline(arch, dtype)
        with _counting_mode(counter):
            yield counter, pipe


# --- the simulations -------------------------------------------------------------------------------------


def _settings(job: Job, family: str):
    # The animate stage decides from the settings whether a step runs the UNet on one batch or on two (CFG).
    # With a feature cache, step 2 is a reuse step (step 1 is always full).
    return GenerationSettings.family_defaults(family, frames=job.frames, steps=2 if job.cache > 1 else 1, seed=0,
                                            width=job.width, height=job.height, max_cfg=3.0 if job.guided else 1.0,
                                            cache=job.cache)  # fmt: skip


def _image(job: Job):
    from PIL import Image

    return Image.new("RGB", (job.width, job.height), (128, 128, 128))


def _mask(job: Job):
    """A cinemagraph's weights: the left half of the picture moves."""
    import numpy as np

    weights = np.zeros((job.height, job.width), dtype=np.float32)
    weights[:, : job.width // 2] = 1.0
    return weights


def simulated_plan(plan: MemoryPlan, job: Job) -> MemoryPlan:
    """The plan as it resolves on the simulated GPU: `auto` attention is SDPA on CUDA (its flash /
    memory-efficient kernels never hold the score matrix), sliced where only the math kernel exists."""
    if plan.attention != "auto":
        return plan
    sliced = job.gpu != "cuda" and plan.slice_attention
    return replace(plan, attention="sliced" if sliced else "sdpa")


def _run_plan(arch: Architecture, plan: MemoryPlan, job: Job) -> Simulation:
    import torch

    from ..memory.placement import layer_by_layer
    from ..stages.animate import VideoModel

    started = time.perf_counter()
    plan = simulated_plan(plan, job)
    dtype = _torch_dtype(job.dtype)
    device = torch.device("meta")
    math = job.gpu != "cuda" or plan.attention == "sliced"
    with _simulated_pipeline(arch, dtype, math) as (counter, pipe):
        model = FAMILIES[arch.family].adapter(
            ModelSource(name=arch.name, path=Path("."), kind=VIDEO, family=arch.family), pipe, device, dtype
        )
        store_weights(pipe.unet, job.weights, dtype)
        meter = _StageMeter(counter)
        meter.mark("encode")  # the placement (weights moving to the device) counts with the first stage
        video_model = VideoModel(model, plan)
        if job.tiny_decoder:  # its few MB of weights go to the device with the model's
            video_model.decoder = _fake_tiny_decoder(dtype, device)
        replays = _Replays(counter)
        layered = layer_by_layer(plan.offload, "denoiser")
        if layered:  # the simulated GPU has streams (placement.has_streams): diffusers prefetches after a first call
            video_model.denoise = _order_traced(video_model.denoise, counter, replays)
        video_model.denoise = replays.wrap(video_model.denoise)
        decode_context = _decode_context(arch, job, plan, math, pipe.vae.decoder)
        video_model._decode = replays.wrap(video_model._decode, _SHARED_DECODES, decode_context)
        if not layered:  # a replayed piece would skip its layers' hooks, and the prefetch chain with them
            _replay_feed_forward_pieces(pipe.unet, replays)
            _replay_unet_blocks(pipe.unet, replays, job, math)

        def after_step(step: int, steps: int, latents) -> None:
            if step < steps:  # the full step is over; what follows is the cache's reuse step
                meter.mark("reuse_step")

        with _replayed_tiles(replays):
            end = _image(job) if job.end else None
            mask = _mask(job) if job.mask else None
            settings = _settings(job, arch.family)
            run = lambda: video_model(_image(job), settings, _progress_for(meter), on_step=after_step, end=end,  # noqa: E731
                                      mask=mask)  # fmt: skip
            decoded = _run_to_end(run, meter)
        return _result(plan.profile, plan.savers(), decoded, counter, meter, pipe, started)


def _result(name: str, savers: list[str], decoded: bool, counter, meter: _StageMeter, pipe, started: float):
    """The Simulation of a finished run (call inside the simulation's modes: the last stage closes here)."""
    meter.mark(None)
    if not decoded:
        raise SimulationError(f"the simulation of {name} stopped before decoding")
    return Simulation(
        name=name,
        savers=savers,
        peak_bytes=counter.peak,
        stage_peak_bytes=meter.peaks,
        stage_flops=meter.flops,
        weights_bytes=_weights_bytes(pipe),
        seconds=round(time.perf_counter() - started, 2),
        stage_transfer_bytes=meter.transfers,
        placement_transfer_bytes=meter.placement,
        stage_streamed_bytes=meter.streamed,
    )


def _run_to_end(run, meter: _StageMeter) -> bool:
    """Run a generation; the final conversion to numpy is the one step fake tensors cannot take. True if the
    generation got past decoding."""
    try:
        run()
    except Exception as exc:
        if meter.current != "decode" or "data" not in str(exc).lower() and "numpy" not in str(exc).lower():
            raise SimulationError(f"{type(exc).__name__}: {first_line(exc)}") from exc
    return meter.current == "decode"


def _run_recipe(arch: Architecture, recipe: str, job: Job) -> Simulation:
    """diffusers' own `StableVideoDiffusionPipeline.__call__`, as its docs show it or its low-memory recipe."""
    import torch

    started = time.perf_counter()
    dtype = _torch_dtype(job.dtype)
    with _simulated_pipeline(arch, dtype, job.gpu != "cuda") as (counter, pipe):
        # `do_classifier_free_guidance` reads `guidance_scale.max() > 1` off the device, a value fake tensors do
        # not have; it is known from the job's max guidance (3.0 with CFG, 1.0 without).
        guided = _settings(job, arch.family).max_cfg > 1
        pipe.__class__ = type(
            "SimulatedSVDPipeline", (type(pipe),), {"do_classifier_free_guidance": property(lambda self: guided)}
        )
        meter = _StageMeter(counter)
        meter.mark("encode")
        if recipe == "diffusers":
            pipe.to("meta")
            decode_chunk = 8
        else:
            # diffusers empties the device's allocator cache first, which "meta" has no module for; emptying a
            # cache frees no live tensor, so it is skipped. The rest, accelerate's hooks included, is real.
            import diffusers.pipelines.pipeline_utils as pipeline_utils

            empty_cache = pipeline_utils.empty_device_cache
            pipeline_utils.empty_device_cache = lambda device_type=None: None
            try:
                pipe.enable_model_cpu_offload(device="meta")
            finally:
                pipeline_utils.empty_device_cache = empty_cache
            pipe.unet.enable_forward_chunking()
            decode_chunk = 2
        replays = _Replays(counter)
        pipe.vae.decode = _replayed_decode(pipe.vae, replays)
        _replay_feed_forward_pieces(pipe.unet, replays)
        _replay_unet_blocks(pipe.unet, replays, job, job.gpu != "cuda")
        unet_started = pipe.unet.register_forward_pre_hook(
            lambda *_: meter.mark("step") if meter.current == "encode" else None
        )

        def step_end(_pipe, i, t, kwargs):
            meter.mark("decode")
            return kwargs

        def run():
            s = _settings(job, arch.family)
            pipe(
                _image(job), height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                fps=s.fps, motion_bucket_id=s.motion_bucket, noise_aug_strength=s.noise_aug,
                decode_chunk_size=decode_chunk, min_guidance_scale=s.min_cfg, max_guidance_scale=s.max_cfg,
                generator=torch.Generator("cpu").manual_seed(s.seed), output_type="np",
                callback_on_step_end=step_end,
            )  # fmt: skip

        decoded = _run_to_end(run, meter)
        unet_started.remove()
        return _result(recipe, RECIPE_DESCRIPTIONS[recipe], decoded, counter, meter, pipe, started)


def _replayed_decode(vae, replays: _Replays):
    """`vae.decode` with repeated chunks replayed (see `_Replays`); it returns its usual `DecoderOutput`."""
    from diffusers.models.autoencoders.vae import DecoderOutput

    decode = vae.decode
    sample = replays.wrap(lambda latents, **kwargs: decode(latents, **kwargs).sample)
    return lambda latents, **kwargs: DecoderOutput(sample=sample(latents, **kwargs))


# --- cache and public entry points -----------------------------------------------------------------------


def _cache_key(arch: Architecture, what: dict, job: Job) -> str:
    import diffusers
    import torch

    blob = json.dumps(
        {
            "sim": SIM_VERSION,
            "svd": __version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "arch": arch.key(),
            "job": asdict(job),
            "what": what,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cache_path(key: str) -> Path:

    return cache_dir() / "simulations" / f"{key}.json"


def _read_cache(key: str) -> Simulation | None:
    try:
        data = json.loads(_cache_path(key).read_text(encoding="utf-8"))
        return replace(Simulation(**data), cached=True)
    except (OSError, ValueError, TypeError):
        return None


def _cached(key: str, compute) -> Simulation:
    path = _cache_path(key)
    hit = _read_cache(key)
    if hit is not None:
        return hit
    result = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(asdict(result)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs the next run the simulation
    return result


def _quietly(run, *args) -> Simulation:
    """diffusers warns about fp32 modules whenever a fake component is cast; nothing a user can act on."""

    with quiet_transformers():
        return run(*args)


def simulate(arch: Architecture, plan: MemoryPlan, job: Job, use_cache: bool = True) -> Simulation:
    """Peak device bytes and FLOPs of one video made by svd's `VideoModel` with `plan` (cached on disk)."""
    what = {k: v for k, v in plan.describe().items() if k != "reason"}
    if not use_cache:
        return _quietly(_run_plan, arch, plan, job)
    return _cached(_cache_key(arch, what, job), lambda: _quietly(_run_plan, arch, plan, job))


def simulate_recipe(arch: Architecture, recipe: str, job: Job, use_cache: bool = True) -> Simulation:
    """The same for diffusers' `StableVideoDiffusionPipeline` with one of its documented recipes."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not one of {RECIPES}")
    job = replace(job, cache=1, tiny_decoder=False, weights="full")  # diffusers' recipes: no svd lever
    if not use_cache:
        return _quietly(_run_recipe, arch, recipe, job)
    return _cached(_cache_key(arch, {"recipe": recipe}, job), lambda: _quietly(_run_recipe, arch, recipe, job))


def cached_simulation(arch: Architecture, plan: MemoryPlan, job: Job) -> Simulation | None:
    """The cached result of `simulate(arch, plan, job)`, or None (nothing is computed)."""
    return _read_cache(_cache_key(arch, {k: v for k, v in plan.describe().items() if k != "reason"}, job))


def simulated_choice(
    model,
    free_bytes: int,
    frames: int,
    width: int,
    height: int,
    overrides: dict,
    cache: int = 1,
    tiny_decoder: bool = False,
    weights: str = "full",
) -> MemoryPlan:
    """The automatic memory choice from simulated peaks: the fastest profile that fits in `free_bytes`, for the
    loaded `model` (its adapter) and the job (with the feature cache's kept features when `cache` is on, its
    weights stored as `weights` says). Profiles
    are simulated (or read from the cache) in order, fastest first, and only until one fits. Raises if a simulation
    fails; the caller falls back to the analytic estimate."""

    arch = architecture_of(model.pipe, model.source.name, model.family)
    gpu = "mps" if model.device.type == "mps" else "cuda"
    job = Job(frames=frames, width=width, height=height, dtype=dtype_name(model.dtype), gpu=gpu, cache=cache,
              tiny_decoder=tiny_decoder, weights=weights)  # fmt: skip
    return pick_simulated(arch, job, free_bytes, overrides, simulate)


def pick_simulated(arch: Architecture, job: Job, free_bytes: int, overrides: dict, run) -> MemoryPlan:
    """The one automatic choice on a GPU, for `--memory auto` and `svd doctor` alike: profiles in order, fastest
    first, each simulated by `run(arch, plan, job)` (`simulate`, or `cached_simulation` for a quick answer that
    may be None), until one fits in `free_bytes`. Raises MissingSimulation when `run` gives none."""
    peaks: list[tuple[str, int]] = []
    for name in PROFILE_ORDER:
        result = run(arch, plan_for(name, **overrides), job)
        if result is None:
            raise MissingSimulation(name)
        peaks.append((name, result.peak_bytes))
        if free_bytes_needed(peaks[-1][1]) <= free_bytes:
            break
    name, reason = pick_profile(free_bytes, peaks)
    plan = replace(plan_for(name, **overrides), reason=reason)
    if job.weights == "full" and plan.offload != "none":
        faster = PROFILE_ORDER[: PROFILE_ORDER.index(name)]
        better = fp8_would_fit(arch, job, free_bytes, [plan_for(p, **overrides) for p in faster], run)
        if better is not None:
            plan = replace(plan, reason=f"{reason}; with fp8 weights {better} would keep every weight on the card "
                                        "(the frames change slightly)")  # fmt: skip
    return plan


def fp8_would_fit(arch: Architecture, job: Job, free_bytes: int, plans: list[MemoryPlan], run,
                  peak_of=None) -> str | None:  # fmt: skip
    """The first of `plans` that keeps every weight on the card and fits `free_bytes` with the UNet's weights
    stored in fp8 (each simulated by `run(arch, plan, job)`; `peak_of(name, simulation)` the peak to fit, the
    simulation's own by default), or None. Auto never turns fp8 on (it changes the frames): this only names it."""
    for plan in plans:
        if plan.offload != "none":
            continue
        result = run(arch, plan, replace(job, weights="fp8"))
        if result is None:  # not in the cache (`svd doctor`)
            continue
        peak = peak_of(plan.profile, result) if peak_of else result.peak_bytes
        if free_bytes_needed(peak) <= free_bytes:
            return plan.profile
    return None


class MissingSimulation(LookupError):
    """A profile's simulated peak is not in the cache (`svd plan` computes it)."""


def pick_profile(free_bytes: int, peaks: list[tuple[str, int]]) -> tuple[str, str]:
    """The fastest profile whose simulated peak (+ allocator overhead and workspaces) fits in `free_bytes`."""

    for name, peak in peaks:
        if free_bytes_needed(peak) <= free_bytes:
            return name, (
                f"{gib(free_bytes)} free; {name} needs {gib(free_bytes_needed(peak))} "
                f"(simulated peak {gib(peak)} + {ALLOCATOR_FACTOR - 1:.0%} allocator overhead + workspaces)"
            )
    name, peak = peaks[-1]
    return (
        name,
        f"{gib(free_bytes)} free is less than even {name}'s simulated {gib(free_bytes_needed(peak))}; trying it anyway",
    )
