"""Throughput of a batch in one process vs on Ray with 1 and 2 CPU workers (1 torch thread each), tiny model.

    python benchmarks/ray_throughput.py --images 24 --out benchmarks/results/ray-cpu.json

Each mode animates the same photos into a fresh folder through the library's batch runner (the code
`svd animate` runs), timing every video's completion on the driver. Reported per mode: the end-to-end
time (including, for Ray, starting a local instance and its workers and their model loads), the
steady-state rate (videos finished after every worker delivered its first one, over the time that took),
and the mean seconds per video as the workers measure it. Ray's per-video overhead is the steady-state
time per video of 1 Ray worker minus that of one process (both 1 thread), which on a busy machine is noise;
`ray_dispatch_seconds_per_video` measures it within one run (time between two videos of one worker minus
the time the worker spent on one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def photos(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    sources = [Image.open(EXAMPLES / n).convert("RGB") for n in ("chelsea.png", "coffee.png", "astronaut.png")]
    for i in range(count):
        sources[i % 3].rotate(i * 7).save(folder / f"p{i:03d}.png")


def run(mode: str, inputs: Path, out: Path, settings: dict) -> dict:
    from svd_cli import batch
    from svd_cli.options import Request
    from svd_cli.session import Session

    executor, workers = None, 1
    if mode.startswith("ray"):
        from svd_cli.ray_executor import RayExecutor

        workers = int(mode[3:])
        executor = RayExecutor(None, workers, threads=1)
    started = time.monotonic()
    session = Session(Request([str(inputs)], out=f"{out}/", **settings))
    plan = batch.jobs_for_request(session)
    finished: list[float] = []
    summary = batch.Summary()
    batch.run_jobs(session, plan, summary, lambda r: finished.append(time.monotonic() - started), executor=executor)
    total = time.monotonic() - started
    done = [r for r in summary.results if r.status == "ok"]
    assert len(done) == len(plan.jobs), [r.reason for r in summary.results if r.status != "ok"]
    first = finished[workers - 1]  # every worker has delivered once: startup and model loads are behind us
    steady = (len(finished) - workers) / (finished[-1] - first) * 60 if len(finished) > workers else None
    return {
        "mode": mode,
        "videos": len(done),
        "seconds_total": round(total, 2),
        "videos_per_minute_total": round(len(done) / total * 60, 2),
        "seconds_to_first_video": round(finished[0], 2),
        "videos_per_minute_steady": round(steady, 2) if steady else None,
        "seconds_per_video_steady": round(60 / steady, 3) if steady else None,
        "seconds_per_video_in_worker": round(sum(r.seconds for r in done[workers:]) / (len(done) - workers), 3),
        "per_worker": summary.workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--modes", default="local,ray1,ray2")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # the single process gets what each worker gets
    settings = {"model": "tiny", "size": args.size, "frames": args.frames, "steps": args.steps, "seed": 1}
    work = Path(tempfile.mkdtemp(prefix="svd-bench-"))
    try:
        photos(work / "in", args.images)
        rows = []
        for mode in args.modes.split(","):  # give the modes in several orders to see the machine's drift
            rows.append(run(mode, work / "in", work / mode, settings))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r["mode"]: r for r in rows}
    report = {
        "settings": {**settings, "images": args.images, "torch_threads_per_worker": 1},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "versions": {"torch": torch.__version__, "ray": __import__("ray").__version__},
        "rows": rows,
    }
    if {"ray1", "ray2"} <= by.keys():
        report["scaling_2_over_1_steady"] = round(
            by["ray2"]["videos_per_minute_steady"] / by["ray1"]["videos_per_minute_steady"], 2
        )
        report["scaling_2_over_1_total"] = round(
            by["ray2"]["videos_per_minute_total"] / by["ray1"]["videos_per_minute_total"], 2
        )
    if {"local", "ray1"} <= by.keys():
        report["ray_overhead_seconds_per_video"] = round(
            by["ray1"]["seconds_per_video_steady"] - by["local"]["seconds_per_video_steady"], 3
        )
        # Within one run (so immune to the machine's load drifting between runs): the time between two videos
        # of a single worker, minus the time the worker spent making one = dispatch, result transfer, driver.
        report["ray_dispatch_seconds_per_video"] = round(
            by["ray1"]["seconds_per_video_steady"] - by["ray1"]["seconds_per_video_in_worker"], 3
        )
        report["ray_fixed_overhead_seconds"] = round(
            by["ray1"]["seconds_to_first_video"] - by["local"]["seconds_to_first_video"], 2
        )
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
