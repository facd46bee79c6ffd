"""The denoising stage's progress: one tick a step."""

from __future__ import annotations

from ...progress import Progress
from .base import Step, StepHook


class ReportProgress(StepHook):
    def __init__(self, progress: Progress):
        self.progress = progress

    def start(self, steps: int) -> None:
        self.progress.start("denoise", total=steps)

    def after(self, step: Step) -> None:
        self.progress.advance()

    def end(self) -> None:
        self.progress.end()
