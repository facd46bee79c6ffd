"""LoRA weights on the SVD UNet, and a fine-tuned UNet in place of the model's.

diffusers' `UNetSpatioTemporalConditionModel` carries only `UNet2DConditionLoadersMixin` (`load_attn_procs`), not
the `PeftAdapterMixin` that gives other UNets `load_lora_adapter` / `set_adapters` / `fuse_lora`; so svd
injects the LoRA layers with PEFT's public API (`inject_adapter_in_model`, `set_peft_model_state_dict`), scales
each LoRA with `set_scale`, and fuses a single LoRA into the weights (`merge`) so it costs nothing per step.
Several LoRAs stay unfused and add up at every step.

Files are safetensors with PEFT/diffusers names (`<module>.lora_A.weight` / `.lora_B.weight`, with or without a
`unet.` prefix) or the older diffusers names (`<module>.lora.down.weight`, `...processor.to_q_lora.down.weight`);
the alpha comes from diffusers' LoRA config in the file's metadata (`lora_adapter_metadata`: `lora_alpha`,
`alpha_pattern`, `use_rslora`), else from an optional `<module>.alpha` tensor, else alpha = rank.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, UsageError, first_line, ref
from .single_file import load_unet_file, read_header, what_is

if TYPE_CHECKING:
    import torch
    from torch import nn


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors dtypes a LoRA's weights and alphas may have


def read_lora(path: Path, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, float]]:
    """The LoRA's tensors with PEFT names, and each target module's rank and alpha; refused (one sentence) unless
    every tensor is a floating-point LoRA factor of a consistent rank, judged from the header before loading."""
    from safetensors import safe_open

    path = Path(path)
    header = read_header(path, option="lora")
    names = {key: name for key in header.tensors if (name := _peft_name(key)) is not None}
    if not names:
        kohya = any(k.startswith("lora_unet_") for k in header.tensors)
        found = "kohya-style names (lora_unet_...), which svd does not read" if kohya else what_is(header)
        _refuse(path, f"not a LoRA for the SVD UNet: it holds {found}")
    shapes = {}
    for key, name in names.items():
        kind, shape = header.tensors[key]
        if kind not in FLOAT_DTYPES:
            _refuse(path, f"tensor {key} is {kind}, but a LoRA's weights are floating point (F16, BF16 or F32)")
        if name.endswith(".alpha") and math.prod(shape) != 1:
            _refuse(path, f"alpha {key} holds {math.prod(shape)} numbers, not one")
        shapes[name] = shape
    ranks = _ranks(path, shapes)
    config = _adapter_config(path, header.metadata)
    state, alphas = {}, {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key, name in names.items():
            if name.endswith(".alpha"):
                alphas[name[: -len(".alpha")]] = float(f.get_tensor(key).item())
            else:
                state[name] = f.get_tensor(key).to(dtype)
    if config is not None:  # diffusers' config, as its own loader uses it, rather than alpha tensors
        pattern = config.get("alpha_pattern") or {}
        alpha = config.get("lora_alpha")
        alphas = {m: float(pattern.get(get_pattern_key(pattern, m), r if alpha is None else alpha)) for m, r in
                  ranks.items()}  # fmt: skip
        if config.get("use_rslora"):  # scaled by alpha / sqrt(rank): the same as alpha * sqrt(rank) over rank
            alphas = {m: a * math.sqrt(ranks[m]) for m, a in alphas.items()}
    return state, ranks, {m: alphas.get(m, float(r)) for m, r in ranks.items()}


def get_pattern_key(patterns, module: str) -> str:
    """The pattern of PEFT's `rank_pattern`/`alpha_pattern` that names `module` (PEFT matches a pattern against
    the end of the module's dotted name), or `module` itself if none does."""
    return next((p for p in patterns if re.match(rf"(.*\.)?({p})$", module)), module)


def _refuse(path: Path, problem: str):
    message = f"{ref('lora')} {path}: {problem}; choose a LoRA for the SVD UNet."
    raise UsageError(message, option="lora", value=str(path))


def _ranks(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Each target module's rank, from the shapes of its lora_A (rank x in) and lora_B (out x rank) factors."""
    ranks = {}
    for name, shape in sorted(shapes.items()):
        module, _, factor = name.rpartition(".lora_")
        if factor == "B.weight" and f"{module}.lora_A.weight" not in shapes:
            _refuse(path, f"{module} has lora_B but no lora_A")
        if factor != "A.weight":
            continue
        up = shapes.get(f"{module}.lora_B.weight")
        if up is None:
            _refuse(path, f"{module} has lora_A but no lora_B")
        if len(shape) not in (2, 4, 5) or len(up) != len(shape):
            _refuse(path, f"{module}'s factors have shapes {shape} and {up}, not a linear or convolution LoRA's")
        if shape[0] == 0 or up[1] != shape[0]:
            problem = f"{module}'s lora_A has rank {shape[0]} and its lora_B {up[1]}: both need one rank, 1 or more"
            _refuse(path, problem)
        ranks[module] = shape[0]
    return ranks


def _adapter_config(path: Path, metadata: dict[str, str]) -> dict | None:
    """The LoRA config diffusers (0.33 and later) stores in the file's metadata, for the UNet; None without one."""
    text = metadata.get("lora_adapter_metadata")
    if text is None:
        return None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        _refuse(path, "its lora_adapter_metadata is not a JSON table")
    if any(key.startswith("unet.") for key in config):  # written by a pipeline: one config per component
        config = {key.removeprefix("unet."): value for key, value in config.items() if key.startswith("unet.")}
    if config.get("use_dora"):
        _refuse(path, "a DoRA (use_dora), which svd does not apply")
    alpha, pattern = config.get("lora_alpha"), config.get("alpha_pattern") or {}
    numbers = [alpha, *pattern.values()] if isinstance(pattern, dict) else [None]
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in numbers if a is not None) or (
        not isinstance(pattern, dict)
    ):
        _refuse(path, "its lora_adapter_metadata has a lora_alpha or alpha_pattern that is not numbers")
    return config


def _peft_name(key: str) -> str | None:
    key = re.sub(r"^(unet\.|base_model\.model\.)", "", key)
    if key.endswith(".alpha"):
        return key
    key = re.sub(r"\.processor\.(to_q|to_k|to_v)_lora\.(down|up)\.", r".\1.lora.\2.", key)
    key = re.sub(r"\.processor\.to_out_lora\.(down|up)\.", r".to_out.0.lora.\1.", key)
    key = key.replace(".lora.down.weight", ".lora_A.weight").replace(".lora.up.weight", ".lora_B.weight")
    key = key.replace(".lora_A.default.weight", ".lora_A.weight").replace(".lora_B.default.weight", ".lora_B.weight")
    return key if key.endswith((".lora_A.weight", ".lora_B.weight")) else None


def check_fits(unet: nn.Module, state: dict, ranks: dict, path: Path) -> None:
    """Every LoRA pair must sit on a layer of this UNet with matching input and output sizes."""
    from torch import nn

    for module_name in sorted(ranks):
        down, up = state.get(f"{module_name}.lora_A.weight"), state.get(f"{module_name}.lora_B.weight")
        try:
            layer = unet.get_submodule(module_name)
        except AttributeError:
            layer = None
        layer = getattr(layer, "base_layer", layer)  # already wrapped by an earlier LoRA
        problem = None
        if up is None:
            problem = f"{module_name} has lora_A but no lora_B"
        elif not isinstance(layer, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            problem = f"this UNet has no layer {module_name}"
        else:
            size_in = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            size_out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
            if (down.shape[1], up.shape[0]) != (size_in, size_out):
                problem = (
                    f"{module_name} maps {size_in} -> {size_out} features but the LoRA maps "
                    f"{down.shape[1]} -> {up.shape[0]}"
                )
            elif (
                down.dim() != layer.weight.dim()
                or tuple(down.shape[2:]) != tuple(layer.weight.shape[2:])
                or any(n != 1 for n in up.shape[2:])
            ):
                problem = (
                    f"{module_name} has weights of shape {tuple(layer.weight.shape)} but the LoRA's factors are "
                    f"{tuple(down.shape)} and {tuple(up.shape)}"
                )
        if problem:
            raise UsageError(
                f"{ref('lora')} {path}: does not fit this model's UNet ({problem}); it was made for another model.",
                option="lora",
                value=str(path),
            )


def check_loras_fit(config: dict, loras: list[tuple[Path, float]]) -> None:
    """Before any work: every LoRA file is a LoRA that fits a UNet of `config` (built on the meta device)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNetSpatioTemporalConditionModel

    with init_empty_weights():
        unet = UNetSpatioTemporalConditionModel(**config)
    for path, _ in loras:
        state, ranks, _ = read_lora(Path(path), torch.float32)
        check_fits(unet, state, ranks, Path(path))


def apply_loras(unet: nn.Module, loras: list[tuple[Path, float]], dtype: torch.dtype) -> None:
    """Add each (path, scale) LoRA to `unet`; a single one is fused into the weights."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer

    names = []
    for i, (path, scale) in enumerate(loras):
        state, ranks, alphas = read_lora(Path(path), dtype)
        check_fits(unet, state, ranks, Path(path))
        name = f"svd_lora_{i}"
        rank = max(ranks.values())
        config = LoraConfig(
            r=rank, lora_alpha=alphas[max(ranks, key=ranks.get)], target_modules=sorted(ranks),
            rank_pattern={f"^{re.escape(m)}$": r for m, r in ranks.items()},
            alpha_pattern={f"^{re.escape(m)}$": a for m, a in alphas.items()},
        )  # fmt: skip
        with warnings.catch_warnings():  # "multiple adapters in the model": several LoRAs are meant
            warnings.simplefilter("ignore", UserWarning)
            inject_adapter_in_model(config, unet, adapter_name=name)
        result = set_peft_model_state_dict(unet, state, adapter_name=name)
        if getattr(result, "unexpected_keys", None):
            raise UsageError(
                f"{ref('lora')} {path}: {len(result.unexpected_keys)} of its tensors found no layer "
                f"(e.g. {result.unexpected_keys[0]}); it was made for another model.",
                option="lora",
                value=str(path),
            )
        names.append(name)
        for module in unet.modules():
            if isinstance(module, LoraLayer) and name in module.lora_A:
                module.set_scale(name, scale)
    layers = [m for m in unet.modules() if isinstance(m, LoraLayer)]
    for module in layers:
        module.set_adapter([n for n in names if n in module.lora_A], inference_mode=True)
        module.to(dtype)
    if len(names) == 1:  # fused: the step costs what the base model's does
        for module in layers:
            module.merge(adapter_names=names)
    unet.requires_grad_(False)


def load_unet(path: Path, config: dict, dtype: torch.dtype):
    """A fine-tuned SVD UNet: a diffusers folder, or a safetensors file in diffusers or Stability layout."""

    path = Path(path)
    if path.is_dir():
        from diffusers import UNetSpatioTemporalConditionModel

        variant = "fp16" if not any(path.glob("diffusion_pytorch_model.safetensors")) and any(
            path.glob("diffusion_pytorch_model.fp16.safetensors")
        ) else None  # fmt: skip
        try:
            unet = UNetSpatioTemporalConditionModel.from_pretrained(
                path, torch_dtype=dtype, variant=variant, use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = first_line(exc, type(exc).__name__)[:200]
            raise ModelLoadError(
                f"{ref('unet')} {path}: not a diffusers UNet folder svd can load ({first}).", path=path
            ) from None
        return unet.eval().requires_grad_(False)
    header = read_header(path, option="unet")
    found = what_is(header)
    if found not in ("svd", "svd-unet"):
        raise ModelLoadError(f"{ref('unet')} {path}: not an SVD UNet: it is {found}.", path=path)
    return load_unet_file(header, dtype, config, option="unet")
