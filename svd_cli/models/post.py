"""What the post stages' models share (the upscaler, the RIFE interpolator): each is one .safetensors file,
checked before anything is read from it, and a network that sits on the device only while its stage runs, so
the next video's UNet gets the memory back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..device import free_memory
from ..errors import ModelLoadError, UsageError, ref
from ..kinds import KINDS, weights_suffix
from .layout import PICKLE_SUFFIXES, safetensors_problem

if TYPE_CHECKING:
    import torch


def check_weights_file(path: Path, kind: str) -> None:
    """Refuse what svd will not read as a model of `kind`: a missing file, a pickle, anything but its kind's file
    (safetensors; ONNX for a background remover)."""
    option, role = KINDS[kind]["option"], KINDS[kind]["role"]
    noun = role.split(" ", 1)[1]
    suffix, wanted = path.suffix.lower(), weights_suffix(kind)
    article = "an" if wanted[1] in "aeiou" else "a"
    if suffix in PICKLE_SUFFIXES:
        problem = (
            f"a pickle file ({suffix}), which can run code when it is loaded, so svd reads {noun}s only from "
            f"{wanted} files: convert it to {wanted[1:]} or choose {article} {wanted} {noun}."
        )
    elif suffix != wanted:
        problem = f"not {article} {wanted} file; choose {role} saved as {wanted[1:]}."
    elif not path.is_file():
        problem = f"no such file; name an existing {wanted} {noun} or a registry {noun}."
    else:
        return
    raise UsageError(f"{ref(option)} {path}: {problem}", option=option, value=str(path))


def check_loadable(source, kind: str) -> Path:
    """The file of a resolved source, refused (one sentence with the fix) if it is not a whole safetensors file."""
    path = Path(source.path)
    check_weights_file(path, kind)
    if problem := safetensors_problem(path):
        advice = source.repair_advice() if source.entry else "replace it with a complete copy"
        raise ModelLoadError(f"{ref(KINDS[kind]['option'])} {path}: {problem}; {advice}.", path=path)
    return path


class PostModel:
    """A loaded post-stage network on a device; `place` before its stage runs, `release` after."""

    def __init__(self, name: str, path: Path, network, device: torch.device, dtype: torch.dtype, sha256=None):
        self.name = name  # as the recipe records it: the registry name, or the file's path
        self.path = path
        self.sha256 = sha256
        self.network = network  # anything with .to(device)
        self.device = device
        self.dtype = dtype

    def place(self, device: torch.device) -> None:
        """Put the weights on `device` (again, after `release`)."""
        if self.device != device:
            self.network.to(device)
            self.device = device

    def release(self) -> None:
        """Move the weights to the CPU and give the device's memory back (for the next video's UNet)."""
        import torch

        device, self.device = self.device, torch.device("cpu")
        self.network.to(self.device)
        free_memory(device)
