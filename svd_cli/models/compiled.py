"""`--compile`: torch.compile of the UNet's repeated blocks (regional compilation), its code kept between runs.

As diffusers' `compile_repeated_blocks` does for the models that name their blocks: each instance of the classes the
UNet repeats (`REPEATED_BLOCKS`) is compiled on its own, so a shape seen once is compiled once for every block of
that shape, in seconds to minutes instead of the whole UNet's graph. The compiled code goes to svd's cache folder
(`compiled/`, inductor's cache: `TORCHINDUCTOR_CACHE_DIR` if set), so a later run, in another process, reads it
instead of compiling again. The frames stay within rounding of the uncompiled UNet's (inductor fuses and
reorders the same arithmetic).

What inductor needs: a C++ compiler on the CPU, Triton on a CUDA GPU; without it (or on Apple's GPUs) one line
says so and the UNet runs uncompiled.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..paths import cache_dir

if TYPE_CHECKING:
    import torch

# The UNet's repeated blocks: every down, mid and up block is made of these two (diffusers' unet_3d_blocks).
REPEATED_BLOCKS = ("SpatioTemporalResBlock", "TransformerSpatioTemporalModel")
# Compiled variants kept per block code (dynamo's default, 8, is below the distinct shapes of SVD's blocks; past
# the limit a block silently runs uncompiled).
RECOMPILE_LIMIT = 64


def compile_folder() -> Path:
    """Where the compiled code is kept: inductor's cache folder, svd's unless TORCHINDUCTOR_CACHE_DIR is set."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or cache_dir() / "compiled")


def compile_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, in a few words; None when it can."""
    if device.type == "cuda":
        found = importlib.util.find_spec("triton") is not None
        return None if found else "Triton, which torch.compile needs on a CUDA GPU, is not installed"
    if device.type != "cpu":
        return f"torch.compile is not used on {device.type}"
    compilers = ("cl",) if sys.platform == "win32" else (os.environ.get("CXX", "c++"), "g++", "clang++")
    if not any(shutil.which(name) for name in compilers):
        return "torch.compile needs a C++ compiler on the CPU (e.g. g++) and none is on the PATH"
    return None


class CompileClock:
    """Seconds spent compiling in this process, from dynamo's own start and end callbacks (one interval per
    batch of compiles); `take` returns what accrued since it was last called."""

    def __init__(self) -> None:
        self.total = 0.0
        self.taken = 0.0
        self.started: float | None = None

    def start(self, _args) -> None:
        self.started = time.monotonic()

    def end(self, _args) -> None:
        if self.started is not None:
            self.total += time.monotonic() - self.started
            self.started = None

    def take(self) -> float:
        seconds, self.taken = self.total - self.taken, self.total
        return seconds


CLOCK = CompileClock()
_listening = False


def compile_unet(unet) -> None:
    """Compile each repeated block of `unet` in place (each compiles on its first call)."""
    global _listening
    import torch
    import torch._dynamo.callback
    import torch._dynamo.config

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_folder()))
    # Its warning that no CUDA runtime is found is about building CUDA extensions, which inductor on a CPU never does.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    if not _listening:
        torch._dynamo.callback.on_compile_start(CLOCK.start)
        torch._dynamo.callback.on_compile_end(CLOCK.end)
        _listening = True
    for block in unet.modules():
        if type(block).__name__ in REPEATED_BLOCKS:
            block.compile()
