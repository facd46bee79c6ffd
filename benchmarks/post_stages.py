"""Time the post stages (loop, colour match, interpolate with minterpolate and RIFE, watermark, upscale) on this
CPU at SVD-XT's size, and simulate the upscaler's GPU memory per memory profile.

    python benchmarks/post_stages.py benchmarks/results/post-stages-<machine>.json

The clip is 25 frames of 1024x576 panning across examples/rocket.jpg (natural content: minterpolate and the
watermark behave differently on noise). The upscaler is Real-ESRGAN x2plus's full architecture with random
weights (the same FLOPs as the real one): its CPU time is measured on a 256x144 frame, a sixteenth of the area,
and its FLOPs per 1024x576 frame counted on the meta device.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def pan(frames: int = 25, size: tuple[int, int] = (1024, 576)) -> np.ndarray:
    photo = Image.open(ROOT / "examples" / "rocket.jpg").convert("RGB")
    width, height = size
    wide = photo.resize((width + 4 * frames, height + 2 * frames))
    return np.stack([np.asarray(wide.crop((4 * i, 2 * i, 4 * i + width, 2 * i + height))) for i in range(frames)])


def machine() -> str:
    """The CPU's model name where the system says it (Linux), else what Python knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def timed(work, repeat: int = 1) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(out: Path) -> dict:
    import torch

    from svd_cli.io.video import write_frames
    from svd_cli.memory.profiles import UPSCALE_TILES
    from svd_cli.models.upscaler import build_upscaler_network
    from svd_cli.planning.upscale import simulate_upscale
    from svd_cli.stages import Clip
    from svd_cli.stages.extend import color_stats, match_colors
    from svd_cli.stages.interpolate import interpolate_clip
    from svd_cli.stages.loop import bounce, crossfade
    from svd_cli.stages.watermark import read_watermark, watermark_clip

    torch.set_num_threads(1)
    frames = pan()
    clip = Clip(frames, fps=8)
    reference = color_stats(frames[:1])
    rows: dict[str, dict] = {}
    rows["loop bounce"] = {"seconds": timed(lambda: bounce(frames), 3)[0]}
    rows["loop crossfade (6)"] = {"seconds": timed(lambda: crossfade(frames, 6), 3)[0]}
    rows["colour match (one 25-frame clip)"] = {"seconds": timed(lambda: match_colors(frames, reference), 3)[0]}
    for factor in (2, 4):
        seconds, made = timed(lambda f=factor: interpolate_clip(clip, f))
        rows[f"interpolate x{factor}"] = {"seconds": seconds, "output_frames": len(made.frames),
                                          "seconds_per_output_frame": seconds / len(made.frames)}  # fmt: skip
    seconds, marked = timed(lambda: watermark_clip(clip))
    rows["watermark embed"] = {"seconds": seconds, "seconds_per_frame": seconds / len(frames)}
    with tempfile.TemporaryDirectory() as folder:
        video = write_frames(marked.frames, Path(folder) / "marked.mp4", 8, "mp4")
        seconds, report = timed(lambda: read_watermark(video))
        rows["watermark check (read back from the MP4)"] = {
            "seconds": seconds, "seconds_per_frame": seconds / len(frames), "carries": report.carries,
            "message_bits": report.message_match,
        }  # fmt: skip

    from svd_cli.models.rife import build_rife_network, in_between

    rife = build_rife_network("rife", seed=0).eval()
    seconds, _ = timed(lambda: in_between(rife, frames[0], frames[1], 0.5), 2)
    rows["interpolate, RIFE 4.13 (random weights, fp32): one in-between frame"] = {"seconds": seconds}

    network = build_upscaler_network("realesrgan-x2", seed=0)
    small = torch.rand(1, 3, 144, 256)
    with torch.inference_mode():
        seconds, _ = timed(lambda: network(small))
    with torch.device("meta"):
        meta_net = build_upscaler_network("realesrgan-x2")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        meta_net(torch.empty(1, 3, 576, 1024, device="meta"))
    rows["upscale x2, full Real-ESRGAN x2plus, fp32"] = {
        "seconds_256x144_frame": seconds,
        "tflops_per_1024x576_frame": counter.get_total_flops() / 1e12,
    }
    simulated = {}
    for profile, tile in UPSCALE_TILES.items():
        sim = simulate_upscale(tile)
        simulated[profile] = {"tile": tile, "tiles": sim.tiles, "peak_gib": sim.peak_bytes / 2**30}
    result = {
        "machine": f"{machine()}, {torch.get_num_threads()} thread(s) of {os.cpu_count()}",
        "torch": torch.__version__,
        "clip": "25 frames 1024x576, a pan over examples/rocket.jpg, 8 fps",
        "cpu": rows,
        "upscale_simulated_fp16_one_1024x576_frame": simulated,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "post-stages.json"
    print(json.dumps(main(target), indent=2))
