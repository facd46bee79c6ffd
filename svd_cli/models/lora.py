"""LoRA weights on the SVD UNet, and a fine-tuned UNet in place of the model's.

diffusers' `UNetSpatioTemporalConditionModel` carries only `UNet2DConditionLoadersMixin` (`load_attn_procs`), not
the `PeftAdapterMixin` that gives other UNets `load_lora_adapter` / `set_adapters` / `fuse_lora`; so svd
injects the LoRA layers with PEFT's public API (`inject_adapter_in_model`, `set_peft_model_state_dict`), scales
each LoRA with `set_scale`, and fuses a single LoRA into the weights (`merge`) so it costs nothing per step.
Several LoRAs stay unfused and add up at every step.

Files are safetensors with PEFT/diffusers names (`<module>.lora_A.weight` / `.lora_B.weight`, with or without a
`unet.` prefix) or the older diffusers names (`<module>.lora.down.weight`, `...processor.to_q_lora.down.weight`);
an optional `<module>.alpha` sets the LoRA's alpha (otherwise alpha = rank).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, ref

if TYPE_CHECKING:
    import torch
    from torch import nn


def read_lora(path: Path, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, float]]:
    """The LoRA's tensors with PEFT names, and each target module's rank and alpha."""
    from safetensors.torch import load_file

    from .single_file import read_header, what_is

    header = read_header(path, option="lora")
    raw = load_file(str(path))
    state, alphas = {}, {}
    for key, tensor in raw.items():
        name = _peft_name(key)
        if name is None:
            continue
        if name.endswith(".alpha"):
            alphas[name[: -len(".alpha")]] = float(tensor.item())
        else:
            state[name] = tensor.to(dtype)
    if not state:
        kohya = any(k.startswith("lora_unet_") for k in raw)
        found = "kohya-style names (lora_unet_...), which svd does not read" if kohya else what_is(header)
        raise ModelLoadError(f"{ref('lora')} {path}: not a LoRA for the SVD UNet: it holds {found}.", path=path)
    ranks = {name[: -len(".lora_A.weight")]: t.shape[0] for name, t in state.items() if name.endswith(".lora_A.weight")}
    return state, ranks, {m: alphas.get(m, float(r)) for m, r in ranks.items()}


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
        if problem:
            raise ModelLoadError(
                f"{ref('lora')} {path}: does not fit this model's UNet ({problem}); it was made for another model.",
                path=path,
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
            raise ModelLoadError(
                f"{ref('lora')} {path}: {len(result.unexpected_keys)} of its tensors found no layer "
                f"(e.g. {result.unexpected_keys[0]}); it was made for another model.",
                path=path,
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
    from .single_file import load_unet_file, read_header, what_is

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
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{ref('unet')} {path}: not a diffusers UNet folder svd can load ({first}).", path=path
            ) from None
        return unet.eval().requires_grad_(False)
    header = read_header(path, option="unet")
    found = what_is(header)
    if found not in ("svd", "svd-unet"):
        raise ModelLoadError(f"{ref('unet')} {path}: not an SVD UNet: it is {found}.", path=path)
    return load_unet_file(header, dtype, config, option="unet")
