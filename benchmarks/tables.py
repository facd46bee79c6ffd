"""Write the tables of benchmarks/README.md from the committed code: the simulated memory / FLOPs table
(`svd plan`'s simulation, SVD-XT 25x1024x576 fp16) and the CPU timing table of a `svd bench` JSON.

    python benchmarks/tables.py benchmarks/results/<cpu>.json
    python benchmarks/tables.py --gpu-check benchmarks/results/gpu-check-cuda.json   # prints that table

Replaces what lies between the `<!-- simulated -->` / `<!-- cpu -->` markers and their `<!-- end -->`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def streamed_note(streamed: int) -> str:
    """How many of a row's copies overlap the computation (streamed offload), if any."""
    return f" ({streamed / 2**30:.2f} streamed)" if streamed else ""


def simulated_table() -> str:
    import diffusers
    import torch

    from svd_cli._version import __version__
    from svd_cli.planning.plan import plan_report
    from svd_cli.planning.simulate import GPU_FP16_TFLOPS, fits_cards, time_floors

    report = plan_report("svd-xt", frames=25, size=(1024, 576), dtype="fp16", steps=25)
    high = next(r for r in report.rows if r.name == "high")
    gpus = list(GPU_FP16_TFLOPS)
    lines = [
        f"Simulated with svd {__version__}, torch {torch.__version__}, diffusers {diffusers.__version__}: SVD-XT, "
        "25 frames, 1024x576, fp16, 25 steps, on a CUDA GPU with flash / memory-efficient attention.",
        "",
        "| row | savers | peak (GiB) | encode / step / decode peak (GiB) | smallest card | TFLOPs | vs high | "
        "host-device copies (GiB) | " + " | ".join(f"{g} floor (s)" for g in gpus) + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(gpus),
    ]
    for r in report.rows:
        stages = " / ".join(f"{r.stage_peak_bytes[s] / 2**30:.2f}" for s in ("encode", "step", "decode"))
        cards = fits_cards(r.peak_bytes)
        moved = r.transfer_bytes(25)
        floors = time_floors(r.flops(25), moved, r.streamed_bytes(25))
        lines.append(
            f"| `{r.name}` | {', '.join(r.savers) or 'none'} | {r.peak_bytes / 2**30:.2f} | {stages} | "
            f"{cards[0] if cards else '> 80'} GB | {r.flops(25) / 1e12:,.0f} | {r.flops(25) / high.flops(25):.3f}x | "
            f"{moved / 2**30:.2f}{streamed_note(r.streamed_bytes(25))} | "
            + " | ".join(f"{floors[g]:.1f}" for g in gpus)
            + " |"
        )
    return "\n".join(lines)


def cpu_table(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [
        f"`{path.relative_to(HERE.parent)}`: {data['device']}, {data['date']}, torch {data['torch']}, "
        f"diffusers {data['diffusers']}, svd {data['svd_version']}; {data['arch']} architecture with random weights, "
        f"{data['frames']} frames {data['width']}x{data['height']}, {data['steps']} steps, {data['dtype']}, "
        f"{data.get('repeat', 1)} interleaved rounds.",
        "",
        "CPU s is the process's CPU time (single-threaded run, so also the row's time alone on one core); it is the "
        "number to compare on a shared machine. Wall s is the elapsed time, disturbed by other load.",
        "",
        "| row | CPU s (min) | CPU s (median) | CPU vs diffusers (min) | CPU vs diffusers (median) | wall s (min) | "
        "wall s (median) | wall vs diffusers (median) | peak RSS (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def f(value, pattern):
        return "-" if value is None else pattern.format(value)

    for r in data["rows"]:
        lines.append(
            f"| `{r['row']}` | {f(r.get('cpu_seconds_min'), '{:.1f}')} | {f(r.get('cpu_seconds'), '{:.1f}')} | "
            f"{f(r.get('cpu_time_vs_diffusers_min'), '{:.3f}x')} | {f(r.get('cpu_time_vs_diffusers'), '{:.3f}x')} | "
            f"{f(r.get('seconds_min', r.get('seconds')), '{:.1f}')} | {f(r.get('seconds'), '{:.1f}')} | "
            f"{f(r.get('time_vs_diffusers'), '{:.2f}x')} | {f((r.get('peak_rss_bytes') or 0) / 2**30, '{:.1f}')} |"
        )
    return "\n".join(lines)


def _copies(row: dict) -> str:
    """A GPU check row's simulated host-device copies a step, and the streamed share ("-" in older files)."""
    if "simulated_step_copy_bytes" not in row:
        return "-"
    moved, streamed = row["simulated_step_copy_bytes"] / 2**30, row["simulated_step_streamed_bytes"] / 2**30
    return f"{moved:.2f} ({streamed:.2f})" if streamed else f"{moved:.2f}"


def gpu_check_table(path: Path) -> str:
    """The GPU check (benchmarks/gpu_check.py): each row's measured peak and times beside its simulated peak."""
    data = json.loads(path.read_text())
    cuda = data["device_type"] == "cuda"
    measured = "peak allocated (GiB)" if cuda else "peak RSS (GiB, not comparable)"
    lines = [
        f"GPU check on {data['device']}, {data['date']}: torch {data['torch']}, diffusers {data['diffusers']}, svd "
        f"{data['svd_version']}; {data['arch']} with random weights, {data['frames']} frames "
        f"{data['width']}x{data['height']}, {data['steps']} steps, {data['dtype']}; {data['check_seconds']} s in all.",
        "",
        f"| row | {measured} | simulated peak (GiB) | measured / simulated | s/step | copies a step (GiB, streamed) "
        "| decode s | total s |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(value, pattern):
        return "-" if value is None else pattern.format(value)

    for r in data["rows"]:
        peak = r.get("peak_allocated_bytes") if cuda else r.get("peak_rss_bytes")
        lines.append(
            f"| `{r['row']}` | {f(peak and peak / 2**30, '{:.2f}')} | {r['simulated_peak_bytes'] / 2**30:.2f} | "
            f"{f(r.get('measured_vs_simulated'), '{:.2f}')} | {f(r.get('seconds_per_step'), '{:.3f}')} | "
            f"{_copies(r)} | {f(r.get('decode_seconds'), '{:.2f}')} | {f(r.get('seconds'), '{:.1f}')}"
            + (f" ({r['error']})" if r.get("error") else "")
            + " |"
        )
    return "\n".join(lines)


def replace_between(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker} -->\n)(?:(?!<!-- ).)*?(<!-- end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--gpu-check"]:  # print a GPU check's table; the README's tables are left alone
        print(gpu_check_table(Path(argv[1]).resolve()))
        return
    readme = HERE / "README.md"
    text = readme.read_text()
    text = replace_between(text, "simulated", simulated_table())
    if argv:
        text = replace_between(text, "cpu", cpu_table(Path(argv[0]).resolve()))
    readme.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
