"""The GPU check: every memory profile, the speed and memory levers (fp8 weights, the feature cache, TAESD's
decoder) and diffusers' two recipes run for real on random full-size weights (nothing to download), their
measured peak device memory and times beside the peaks `svd plan` simulates.

    python benchmarks/gpu_check.py                  # CUDA, SVD-XT 25 frames 1024x576, 2 steps a row
    python benchmarks/gpu_check.py --device cpu --model tiny --frames 2 --size 128x64 --steps 1

The second line runs the same code on the CPU in the test suite (there the measured number is the process's peak
resident memory, which includes the weights and Python; it is not comparable with the simulated device peak).
Writes benchmarks/results/gpu-check-<cuda|cpu>.json (the device's name inside); `python benchmarks/tables.py
--gpu-check FILE` prints its table. It is meant to fit one datacenter GPU's 15 minutes: the default job runs 2
denoising steps a row (the per-step time is what a 25-step video repeats) and prints the time it took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Beside the profiles: the levers that change peaks or time (the fp8 weights on the profile that keeps everything
# on an 8 GB card, the feature cache, TAESD's decoder), each measured next to its simulation.
LEVER_ROWS = ("balanced+fp8", "high+cache3", "high+taesd")
# On a GPU only: compiled blocks, whose gain is Triton's (on the CPU they are slower and cost minutes to compile;
# benchmarks/README.md). The row times its compile apart (compile_seconds).
GPU_ROWS = ("high+compile",)


def main(argv: list[str]) -> Path:
    from dataclasses import replace

    from svd_cli.bench import ANCHORS, Levers, run_bench
    from svd_cli.io.video import write_json
    from svd_cli.memory import PROFILE_ORDER, plan_for
    from svd_cli.options import parse_size
    from svd_cli.planning.simulate import Job, architecture_for, simulate, simulate_recipe
    from svd_cli.progress import Progress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu (the same code, for tests)")
    parser.add_argument("--model", default="svd-xt", help="architecture with random weights: svd-xt, svd or tiny")
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--size", default="1024x576", help="WIDTHxHEIGHT")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per row")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on a GPU, fp32 on the CPU), fp16, bf16, fp32")
    parser.add_argument("--out", type=Path, default=None, help="the JSON [default: benchmarks/results/...]")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)

    class Notes(Progress):
        def note(self, message: str) -> None:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    out = args.out or HERE / "results" / f"gpu-check-{args.device}.json"  # the device's name is inside
    report = run_bench(arch=args.model, frames=args.frames, width=width, height=height, steps=args.steps,
                       rows=[*PROFILE_ORDER, *LEVER_ROWS, *(GPU_ROWS if args.device == "cuda" else ()), *ANCHORS],
                       device=args.device, dtype=args.dtype, out=out,
                       progress=Notes())  # fmt: skip
    # The simulation of the same job, row by row: what `svd plan` and `--memory auto` believe.
    arch = architecture_for(args.model)
    job = Job(frames=args.frames, width=width, height=height, dtype=report["dtype"])
    for row in report["rows"]:
        name = row["row"]
        levers = Levers.of(name)
        if levers is not None:
            lever_job = replace(job, cache=levers.cache, tiny_decoder=levers.taesd,
                                weights="fp8" if levers.fp8 else "full")  # fmt: skip
            simulated = simulate(arch, plan_for(levers.profile), lever_job)
        else:
            simulated = simulate_recipe(arch, name, job)
        row["simulated_peak_bytes"] = simulated.peak_bytes
        row["simulated_flops"] = simulated.flops(args.steps, levers.cache if levers else 1)
        row["simulated_tflops"] = round(row["simulated_flops"] / 1e12, 3)
        # What a step copies between host and card, and how much of it beside the compute (layer-by-layer offload):
        # the measured s/step of low and min against balanced's tells what those copies really cost.
        row["simulated_step_copy_bytes"] = simulated.stage_transfer_bytes.get("step", 0)
        row["simulated_step_streamed_bytes"] = simulated.stage_streamed_bytes.get("step", 0)
        measured = row.get("peak_allocated_bytes")
        if measured:
            row["measured_vs_simulated"] = round(measured / simulated.peak_bytes, 3)
    report["check_seconds"] = round(time.perf_counter() - started, 1)
    write_json(report, out)  # run_bench's file, now with the simulated columns
    print(f"GPU check: {report['check_seconds']} s on {report['device']}; results in {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
