"""Drawing progress and results on a terminal, or plain lines when output goes to a file or a pipe.

Progress and messages go to stderr; stdout carries only data (`--json` lines, `svd weights path`), so
`svd animate ... --json | jq` and `2>log` both work. Colour and bars appear only when both streams are a
terminal and NO_COLOR is not set.
"""

from __future__ import annotations

import os
import sys
import time

from ..memory import gib
from ..progress import NullProgress, Progress, batch_rate, size_text
from .common import one_line, words

STAGE_LABELS = {
    "load_image": "Loading image model",
    "image": "Drawing first frame",
    "restyle": "Restyling photo",
    "load": "Loading model",
    "encode": "Encoding image",
    "denoise": "Denoising",
    "decode": "Decoding frames",
    "upscale": "Upscaling frames",
    "interpolate": "Interpolating frames",
    "watermark": "Watermarking frames",
    "write": "Writing video",
}
FRAME_STAGES = ("decode", "upscale", "interpolate", "watermark")  # counted in frames, not steps


def interactive() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty() and "NO_COLOR" not in os.environ


def err_console():
    from rich.console import Console

    color = interactive()
    return Console(stderr=True, highlight=False, no_color=not color, force_terminal=color or None, soft_wrap=True)


def out_console():
    """Console for data on stdout: tables are never truncated when piped to a file or another program."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, no_color=not tty or "NO_COLOR" in os.environ, width=None if tty else 1000)


class RichProgress(Progress):
    """Rich bars on stderr: one per stage, with steps and elapsed time."""

    interactive = True

    def __init__(self, words=str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.words = words
        self.console = err_console()
        self.bars = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            # Steps done out of total; stages with no count (loading, encoding) show only the time.
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            redirect_stdout=False,  # --json lines stay on stdout while a bar is shown
        )
        self.task = None
        self.batch_task = None
        self.total: int | None = None
        self.done = 0

    def note(self, message: str) -> None:
        self.console.print(one_line(self.words(message)), markup=False)

    def start(self, stage: str, total: int | None = None) -> None:
        self.end()
        self.bars.start()
        self.total, self.done = total, 0
        self.task = self.bars.add_task(STAGE_LABELS.get(stage, stage), total=total, count=self._count())

    def _count(self) -> str:
        return f"{self.done}/{self.total}" if self.total else ""

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.done += amount
            self.bars.update(self.task, advance=amount, count=self._count())

    def end(self) -> None:
        if self.task is not None:
            self.bars.remove_task(self.task)
            self.task = None
        elif self.batch_task is not None:  # nothing else running: the batch is over (or interrupted)
            self.bars.remove_task(self.batch_task)
            self.batch_task = None
        if self.batch_task is None:
            self.bars.stop()

    def overall(self, done: int, total: int, seconds: float) -> None:
        """One bar for a batch on several workers: done / total, videos per minute, time left."""
        if self.batch_task is None:
            self.bars.start()
            self.batch_task = self.bars.add_task("Videos", total=total, count="")
        self.bars.update(self.batch_task, completed=done, count=batch_rate(done, total, seconds))
        if done >= total:
            self.bars.remove_task(self.batch_task)
            self.batch_task = None
            self.bars.stop()


class PlainProgress(Progress):
    """One line per stage on stderr, for logs and pipes."""

    def __init__(self, words=str) -> None:
        self.words = words
        self.stage: str | None = None
        self.total: int | None = None
        self.started = 0.0
        self.last_overall = 0.0

    def note(self, message: str) -> None:
        print(one_line(self.words(message)), file=sys.stderr, flush=True)

    def start(self, stage: str, total: int | None = None) -> None:
        self.end()
        self.stage, self.total, self.started = stage, total, time.monotonic()

    def abandon(self) -> None:
        self.stage = None

    def end(self) -> None:
        if self.stage is None:
            return
        count = f" ({self.total} {'frames' if self.stage in FRAME_STAGES else 'steps'})" if self.total else ""
        label = STAGE_LABELS.get(self.stage, self.stage)
        print(f"  {label}{count}: {time.monotonic() - self.started:.1f} s", file=sys.stderr, flush=True)
        self.stage = None

    def overall(self, done: int, total: int, seconds: float) -> None:
        """A line every half minute (logs of long batches get a rate and an estimate)."""
        if 0 < done < total and time.monotonic() - self.last_overall >= 30:
            self.last_overall = time.monotonic()
            print(f"  {batch_rate(done, total, seconds)}", file=sys.stderr, flush=True)


def make_progress(quiet: bool, words=str) -> Progress:
    """Bars on a terminal, plain lines otherwise, nothing when quiet; `words` spells the notes' settings."""

    if quiet:
        return NullProgress()
    return RichProgress(words) if interactive() else PlainProgress(words)


def render_doctor(report: dict) -> None:
    """`svd doctor` as text."""

    console = out_console()
    p = console.print
    p(f"svd {report['svd']}   Python {report['python']}   {report['platform']}")
    for problem in report.get("install_problems", ()):
        p(f"Broken install: {problem}.", markup=False)
    if report.get("install_problems"):
        return
    cuda = report["cuda_runtime"] or "none"
    p(f"torch {report['torch']}   CUDA runtime {cuda}   diffusers {report.get('diffusers')}")
    if report["gpus"]:
        for g in report["gpus"]:
            mem = f"{gib(g['free_bytes'])} free of {gib(g['total_bytes'])}" if g.get("total_bytes") else ""
            p(f"GPU {g['index']}: {g['name']} {('(sm ' + g['capability'] + ')') if g.get('capability') else ''} {mem}")
    else:
        p("GPU: none found; svd will run on the CPU (slow: minutes per frame for the real models).")
    ram = report.get("ram")
    if ram:
        p(f"RAM: {gib(ram['available_bytes'])} available of {gib(ram['total_bytes'])}")
    att = report["attention"]
    p(
        "Attention: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" if not isinstance(v, str) else f"{k} {v}" for k, v in att.items())
    )
    for name, info in report["auto_profiles"].items():
        if name == "error":
            p(f"Memory estimates unavailable: {info}")
            continue
        line = f"--memory auto for {name} (1024x576): {info['profile']} ({words(info['reason'])})"
        if info.get("estimated_peak_bytes"):  # the analytic estimate's, where no simulation decided
            line += "; estimated peaks: " + ", ".join(f"{k} ~{gib(v)}" for k, v in info["estimated_peak_bytes"].items())
        p(line)
    sim = report.get("simulated", {})
    if sim.get("rows"):
        rows = ", ".join(f"{k} {gib(v['peak_bytes'])} / {v['tflops']:,.0f} TFLOPs" for k, v in sim["rows"].items())
        p(f"Simulated for {sim['job']}: {rows}")
    if sim.get("missing"):
        p(f"Simulated peaks for {sim.get('job', 'the default job')}: not computed yet for "
          f"{', '.join(sim['missing'])}; run `svd plan` (about 30 s of CPU, then cached).")  # fmt: skip
    ff = report["ffmpeg"]
    p(f"ffmpeg: {ff.get('version', '')} at {ff.get('path', ff.get('error'))}")
    hub = report["hub"]
    yes = {True: "yes", False: "no"}
    p(f"Hugging Face cache: {hub['cache']}   offline: {yes[hub['offline']]}   token: {yes[hub['token']]}")
    for w in report["weights"]:
        state = f"downloaded, {size_text(w['size_bytes'])} at {w['path']}" if w["downloaded"] else "not downloaded"
        p(f"weights {w['name']}: {state}")
