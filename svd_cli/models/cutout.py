"""The background remover of remove_background: U^2-Net's ONNX file, run by rembg as Stability's SV3D script runs it.

The script (generative-models, scripts/sampling/simple_video_sample.py) cuts the object out of an opaque photo
with `rembg.remove(image.convert("RGBA"), alpha_matting=True)` after shrinking it to fit 768x768, and rembg's
default session then was u2net (rembg 2.0.86's is another model, bria-rmbg: svd names u2net's session). rembg
downloads its weights itself, from GitHub, into its own folder; svd hands its u2net session the file svd found or
downloaded (models/sources.py) instead, so the file is checked, recorded and offline-safe like every other weight.
rembg and onnxruntime are an optional extra (pip install "svd-cli[rembg]").

`tiny-u2net`, the built-in check, has U^2-Net's input and output (1x3x320x320 normalised RGB in, one 320x320 map
out, which rembg stretches to 0-1) around one 1x1 convolution that gives dark pixels high values: a dark object on
a light background comes out cut out, enough to test the path without the 176 MB download.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, UsageError, ref
from .layout import onnx_problem

if TYPE_CHECKING:
    from PIL import Image

EXTRA = 'pip install "svd-cli[rembg]"'
SCRIPT_SIDE = 768  # the script shrinks an opaque photo to fit this square before removing its background
TINY_OPSET = 13


def check_rembg() -> None:
    """A usage error, before any work, when rembg or onnxruntime (the optional extra) is not installed."""
    missing = [name for name in ("rembg", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"{ref('remove_background')} needs {' and '.join(missing)}, which is not installed: {EXTRA}.",
            option="remove_background",
        )


def tiny_u2net_bytes() -> bytes:
    """The built-in tiny-u2net as an ONNX model: a 1x1 convolution with weights -1 on each colour (the input is
    rembg's normalised picture, so darker is higher), then a sigmoid."""
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ModelLoadError(f"The built-in tiny-u2net is built with the onnx package, which is not installed: "
                             f"{EXTRA}.") from None  # fmt: skip
    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), -1.0, dtype=np.float32), "weight")
    bias = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "weight", "bias"], ["darkness"]),
            helper.make_node("Sigmoid", ["darkness"], ["mask"]),
        ],
        "tiny_u2net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TINY_OPSET)], producer_name="svd")
    model.ir_version = 8  # read by every onnxruntime since 1.10
    return model.SerializeToString()


@contextlib.contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Keep torch's thread count across rembg: importing pymatting (its alpha matting, numba-compiled) and running
    it reset the OpenMP threads torch shares, 1 to 2 here, and another count gives other frames on the CPU."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@functools.cache
def _session_class() -> type:
    """rembg's u2net session reading the file it is given (its `model_path`) instead of downloading its own."""
    with _torch_threads_kept():
        from rembg.sessions.u2net import U2netSession

    class GivenFileU2net(U2netSession):
        @classmethod
        def download_models(cls, *args, model_path: str, **kwargs) -> str:
            return model_path

    return GivenFileU2net


class BackgroundRemover:
    """U^2-Net in a rembg session on the CPU, read once for a run's photos."""

    def __init__(self, source):  # a ModelSource (models/sources.py) of the background-remover kind
        import onnxruntime

        self.name = source.name  # as the recipe records it: the registry name, or the file's stem
        self.sha256 = (source.single_file or {}).get("sha256")
        given = "give U^2-Net's u2net.onnx or an ONNX model with its input and output"  # the user's own file
        advice = source.repair_advice() if source.entry else given
        if problem := onnx_problem(Path(source.path)):
            raise ModelLoadError(f"{ref('background_remover')} {source.path} {problem}; {advice}.",
                                 path=Path(source.path))  # fmt: skip
        try:
            # On the CPU even beside a GPU build of onnxruntime: one 320x320 pass a photo is quick there, and the
            # video model's memory plan counts on the GPU memory that is free.
            self.session = _session_class()("u2net", onnxruntime.SessionOptions(), model_path=str(source.path),
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        except Exception as exc:  # onnxruntime's own error says what is wrong with the file
            raise ModelLoadError(
                f"{ref('background_remover')} {source.path}: onnxruntime cannot read it ({str(exc).strip()}); "
                f"{advice}.",
                path=Path(source.path),
            ) from None
        # What rembg's u2net session relies on: it feeds one 1x3x320x320 picture and reads channel 0 of the first
        # output as a map (N, C, H, W), which it stretches to the photo.
        network = self.session.inner_session
        picture, mask = network.get_inputs()[0].shape, network.get_outputs()[0].shape
        if not (_fits(picture, (1, 3, 320, 320)) and len(mask) == 4):
            raise ModelLoadError(
                f"{ref('background_remover')} {source.path} maps {_shape(picture)} to {_shape(mask)}, not U^2-Net's "
                f"1x3x320x320 picture to a 1x1x320x320 map; {advice}.",
                path=Path(source.path),
            )

    def cut_out(self, image: Image.Image) -> Image.Image:
        """The script's cut-out of an opaque picture: shrunk to fit 768x768 (Lanczos), its background made
        transparent with rembg's alpha matting; RGBA."""
        from PIL import Image

        with _torch_threads_kept():
            from rembg import remove

        picture = image.copy()
        picture.thumbnail((SCRIPT_SIDE, SCRIPT_SIDE), Image.Resampling.LANCZOS)
        with warnings.catch_warnings(), _torch_threads_kept():
            warnings.simplefilter("ignore", RuntimeWarning)  # a flat picture's map is 0/0 in rembg's scaling
            return remove(picture.convert("RGBA"), alpha_matting=True, session=self.session)


def _fits(shape: list, wanted: tuple[int, ...]) -> bool:
    """An ONNX input's or output's shape is `wanted`, a dimension named rather than numbered fitting any size."""
    pairs = zip(shape, wanted, strict=False)
    return len(shape) == len(wanted) and all(not isinstance(n, int) or n == w for n, w in pairs)


def _shape(shape: list) -> str:
    return "x".join(str(n) for n in shape)
