"""Single-file checkpoints: Stability's own `svd_xt.safetensors` (the "SGM" layout of generative-models) loaded
into diffusers' classes, converting the keys while loading.

A single file holds every component under Stability's names:

- `model.diffusion_model.*` — the spatio-temporal UNet (`input_blocks`, `middle_block`, `output_blocks`);
- `first_stage_model.*` — the VAE; its decoder is the temporal decoder (or, in the `*_image_decoder` files, a
  per-frame AutoencoderKL whose `post_quant_conv` runs before the decoder); `conditioner.embedders.3.encoder.*`
  — the VAE encoder (with its `quant_conv`) that encodes the conditioning image;
- `conditioner.embedders.0.open_clip.model.visual.*` — the OpenCLIP ViT-H image encoder.

SV3D's files (`sv3d_u.safetensors`, `sv3d_p.safetensors`, the sv3d family) hold the same UNet and CLIP, but their
conditioning image's encoder is a whole AutoencoderKL under `conditioner.embedders.1.encoder.*` (its decoder never
runs), and `first_stage_model.*` is a per-frame decoder alone, run without a post_quant_conv.

Loading reads only the header first (to tell what the file is, with one clear line for anything else), then
builds one component at a time: its module is created without memory (meta parameters), each of its tensors
is read from the file, converted to the target dtype and renamed, and the component takes them over
(`load_state_dict(assign=True)`). So no second copy of the weights exists beyond the component in hand.
Only safetensors are read; nothing is unpickled.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelLoadError, UsageError, ref
from .architectures import (
    ARCHITECTURES,
    SV3D_ARCHITECTURES,
    SV3D_FAMILY,
    SV3D_P_FAMILY,
    architecture_family,
    assemble_pipeline,
    component_configs,
)
from .layout import HeaderProblem, parse_header
from .quiet import quiet_transformers

if TYPE_CHECKING:
    import torch

FAMILY = "svd"  # the model family (families/) of SVD's single files
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
VAE_ENCODER_PREFIX = "conditioner.embedders.3.encoder."
SV3D_VAE_ENCODER_PREFIX = "conditioner.embedders.1.encoder."  # SV3D's files (sv3d_u.yaml's second embedder)
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


# --- 1. the header: what the file is, without reading the weights -------------------------------------------


@dataclass(frozen=True)
class Header:
    """A safetensors file's table of contents: tensor name -> (dtype, shape)."""

    path: Path
    size: int
    tensors: dict[str, tuple[str, tuple[int, ...]]]
    raw: bytes  # the header bytes as stored (hashed for a quick identity)
    metadata: dict[str, str]  # the header's `__metadata__` (e.g. diffusers' LoRA config)

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.tensors)

    def shape(self, key: str) -> tuple[int, ...] | None:
        entry = self.tensors.get(key)
        return entry[1] if entry else None


def read_header(path: Path, option: str = "model") -> Header:
    """Parse the header of a safetensors file; a pickle, a non-safetensors or a truncated file fails in one line."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{ref(option)} {path}: a pickle checkpoint ({path.suffix}); svd loads safetensors only, because "
            "pickle files can run code: use the .safetensors release of this checkpoint.",
            path=path,
        )
    try:
        size, raw, table = parse_header(path)
    except OSError as exc:
        raise ModelLoadError(f"{ref(option)} {path}: cannot be read ({exc.strerror or exc}).", path=path) from None
    except HeaderProblem as exc:
        if exc.truncated:  # a download or copy cut short: a runtime failure that fetching it again mends
            raise ModelLoadError(f"{ref(option)} {path}: {exc}; download it again.", path=path) from None
        # Damaged or hostile: the file chosen for the option is wrong, refused before any work.
        message = f"{ref(option)} {path}: {exc}; choose a safetensors file svd can read."
        raise UsageError(message, option=option, value=str(path)) from None
    metadata = table.pop("__metadata__", {})
    tensors = {name: (info["dtype"], tuple(info["shape"])) for name, info in table.items()}
    return Header(path=path, size=size, tensors=tensors, raw=raw, metadata=metadata)


def what_is(header: Header) -> str:
    """What a safetensors file holds, in a few words, from its tensor names alone."""
    keys = header.tensors
    unet = [k for k in keys if k.startswith(UNET_PREFIX)]
    if unet:
        if any(".time_stack." in k for k in unet):
            if not header.has(SV3D_VAE_ENCODER_PREFIX + "encoder."):
                return FAMILY
            # sv3d_p's conditioning vector holds each frame's camera: 1280 wide, sv3d_u's 256.
            label = header.shape(UNET_PREFIX + "label_emb.0.0.weight") or (0, 0)
            return SV3D_P_FAMILY if label[1] == 1280 else SV3D_FAMILY
        if header.has("conditioner.embedders.1.model.") or header.has("conditioner.embedders.0.transformer."):
            return "a Stable Diffusion XL checkpoint (text-to-image)"
        if header.has("cond_stage_model."):
            return "a Stable Diffusion 1.x/2.x checkpoint (text-to-image)"
        return "an image diffusion model in Stability's layout, without the temporal layers SVD has"
    if any(k.startswith("input_blocks.") and ".time_stack." in k for k in keys):
        return "svd-unet"  # a bare SVD UNet in Stability's layout
    if any(".spatial_res_block." in k for k in keys) and "conv_in.weight" in keys:
        return "svd-unet"  # an SVD UNet in diffusers layout (e.g. AnimateLCM-SVD-xt)
    if any("lora_A" in k or "lora_down" in k or "lora.down" in k for k in keys):
        return "a LoRA"
    if not keys:
        return "no tensors at all"
    sample = ", ".join(sorted(keys)[:2])
    return f"{len(keys)} tensors none of which belong to Stable Video Diffusion (e.g. {sample})"


def file_family(header: Header) -> str:
    """The model family of a video model's single file (checked by check_svd_file): svd or sv3d."""
    return what_is(header)


def check_svd_file(header: Header) -> None:
    """Refuse anything but a complete SVD (or SV3D) single file, naming what was found."""
    found = what_is(header)
    if found in (FAMILY, SV3D_FAMILY, SV3D_P_FAMILY):
        missing = [
            name
            for name, prefix in (("VAE", VAE_PREFIX + "decoder."), ("CLIP image encoder", CLIP_PREFIX))
            if not header.has(prefix)
        ]
        if missing:
            raise ModelLoadError(
                f"{ref('model')} {header.path}: an SVD UNet without its {' and '.join(missing)}; use it with "
                f"{ref('unet')} over a complete model instead.",
                path=header.path,
            )
        return
    if found == "svd-unet":
        raise ModelLoadError(
            f"{ref('model')} {header.path}: an SVD UNet only; use it with {ref('unet')} over a complete model "
            f"(e.g. {ref('model')} svd-xt {ref('unet')} {header.path}).",
            path=header.path,
        )
    raise ModelLoadError(
        f"{ref('model')} {header.path}: not a Stable Video Diffusion checkpoint: it is {found}.", path=header.path
    )


def match_architecture(header: Header) -> str:
    """Which known architecture of the file's family (architectures.py) its shapes are, from a few telling
    tensors (the width of the UNet's conditioning vector tells sv3d_u from sv3d_p)."""

    found = (
        header.shape(UNET_PREFIX + "input_blocks.0.0.weight"),
        header.shape(CLIP_PREFIX + "conv1.weight"),
        header.shape(VAE_PREFIX + "decoder.conv_in.weight"),
        header.shape(UNET_PREFIX + "label_emb.0.0.weight"),
    )
    family = file_family(header)
    known = {**ARCHITECTURES, **SV3D_ARCHITECTURES}
    for arch, (unet, vae, clip) in known.items():
        if architecture_family(arch) != family:
            continue
        expected = (
            (unet["block_out_channels"][0], unet["in_channels"], 3, 3),
            (clip["hidden_size"], 3, clip["patch_size"], clip["patch_size"]),
            (vae["block_out_channels"][-1], vae["latent_channels"], 3, 3),
            (unet["block_out_channels"][0] * 4, unet["projection_class_embeddings_input_dim"]),
        )
        if found == expected:
            return arch
    raise ModelLoadError(
        f"{ref('model')} {header.path}: an SVD checkpoint of a size svd does not know (UNet input "
        f"{found[0]}, CLIP patch {found[1]}); only the published shapes of SVD, SVD-XT and SV3D (sv3d_u, "
        "sv3d_p) are supported.",
        path=header.path,
    )


def frames_for(header: Header) -> int:
    """SV3D files make 21 views; SVD-XT files (25 frames) say so in their names (svd_xt*.safetensors); others are
    the 14-frame SVD."""
    if file_family(header) in (SV3D_FAMILY, SV3D_P_FAMILY):
        return 21
    return 25 if "xt" in header.path.stem.lower() else 14


# --- 2. the key mapping: diffusers' name -> Stability's name (and how the tensor changes) -------------------


Transform = Callable[["torch.Tensor"], "torch.Tensor"] | None
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_key(key: str, config: dict) -> str:
    """The SGM name (without `model.diffusion_model.`) of a diffusers UNetSpatioTemporalConditionModel tensor."""
    per_level = config["layers_per_block"] + 1  # SGM counts every resnet and the down/upsampler as a block
    simple = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
              "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
              "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}  # fmt: skip
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block = 1 + int(m[1]) * per_level + int(m[3])
        return _block(f"input_blocks.{block}", m[2], m[4])
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_level + per_level - 1}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
        index = {"resnets": {0: 0, 1: 2}, "attentions": {0: 1}}[m[1]][int(m[2])]
        return _block("middle_block", m[1], m[3], index)
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        return _block(f"output_blocks.{int(m[1]) * per_level + int(m[3])}", m[2], m[4])
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        position = 2 if "CrossAttn" in config["up_block_types"][level] else 1
        return f"output_blocks.{level * per_level + per_level - 1}.{position}.conv.{m[2]}"
    raise KeyError(key)


def _block(block: str, kind: str, rest: str, index: int | None = None) -> str:
    if kind == "resnets":
        return f"{block}.{0 if index is None else index}.{_resnet(rest)}"
    rest = rest.replace("temporal_transformer_blocks.", "time_stack.")
    rest = rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace(
        "time_pos_embed.linear_2.", "time_pos_embed.2."
    )
    return f"{block}.{1 if index is None else index}.{rest}"


def _resnet(rest: str) -> str:
    if rest.startswith("time_mixer."):
        return rest
    part, layer, leaf = rest.split(".", 2)
    return ("" if part == "spatial_res_block" else "time_stack.") + f"{_RESNET[layer]}.{leaf}"


def vae_key(key: str, levels: int, encoder_prefix: str) -> tuple[str, Transform]:
    """The full SGM name of a tensor of diffusers' AutoencoderKLTemporalDecoder or AutoencoderKL (encoder and
    decoder), and its reshape if any."""
    if key.startswith("quant_conv."):
        return encoder_prefix + key, None
    side, rest = key.split(".", 1)
    prefix = encoder_prefix + "encoder." if side == "encoder" else VAE_PREFIX + "decoder."
    flat = {"conv_in.": "conv_in.", "conv_norm_out.": "norm_out.", "conv_out.": "conv_out.",
            "time_conv_out.": "conv_out.time_mix_conv."}  # fmt: skip
    for old, new in flat.items():
        if rest.startswith(old):
            return prefix + new + rest[len(old) :], None
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", rest):
        as_conv = _as_linear if m[1] != "group_norm" and m[2] == "weight" else None
        return f"{prefix}mid.attn_1.{_VAE_ATTENTION[m[1]]}.{m[2]}", as_conv
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{prefix}mid.block_{int(m[1]) + 1}.{_vae_resnet(m[2])}", None
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{prefix}down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}", None
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
        return f"{prefix}down.{m[1]}.downsample.conv.{m[2]}", None
    # The decoder's up blocks run deepest first in diffusers; SGM numbers them by resolution level.
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{prefix}up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}", None
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
        return f"{prefix}up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}", None
    raise KeyError(key)


def _vae_resnet(rest: str) -> str:
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    if rest.startswith("temporal_res_block."):
        layer, leaf = rest[len("temporal_res_block.") :].split(".", 1)
        return f"time_stack.{_RESNET[layer]}.{leaf}"
    rest = rest.removeprefix("spatial_res_block.")
    return rest.replace("conv_shortcut.", "nin_shortcut.")


def _as_linear(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1])  # a 1x1 convolution's kernel is a linear layer's matrix


def clip_key(key: str) -> tuple[str, Transform, tuple[int, int] | None]:
    """The SGM name of a transformers CLIPVisionModelWithProjection tensor, its change, and a row range to read."""
    flat = {"vision_model.embeddings.class_embedding": "class_embedding",
            "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
            "vision_model.embeddings.position_embedding.weight": "positional_embedding"}  # fmt: skip
    if key in flat:
        return CLIP_PREFIX + flat[key], None, None
    if key == "visual_projection.weight":
        return CLIP_PREFIX + "proj", lambda t: t.t(), None
    for old, new in (("vision_model.pre_layrnorm.", "ln_pre."), ("vision_model.post_layernorm.", "ln_post.")):
        if key.startswith(old):
            return CLIP_PREFIX + new + key[len(old) :], None, None
    m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
    if not m:
        raise KeyError(key)
    block = f"{CLIP_PREFIX}transformer.resblocks.{m[1]}."
    part = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
            "self_attn.out_proj": "attn.out_proj"}.get(m[2])  # fmt: skip
    if part:
        return f"{block}{part}.{m[3]}", None, None
    which = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj").index(m[2])
    return f"{block}attn.in_proj_{m[3]}", None, (which, 3)  # OpenCLIP packs q, k and v in one matrix


# --- 3. loading, one component at a time ----------------------------------------------------------------------


def load_single_file(path: Path, arch: str, dtype: torch.dtype, unet=None):
    """A StableVideoDiffusionPipeline built from an SGM single file (see the module docstring); `unet` given
    replaces the file's, which is then not read."""

    header = read_header(path)
    check_svd_file(header)
    configs = component_configs(arch)
    unet = unet if unet is not None else load_unet_file(header, dtype, configs["unet"])
    vae = _load_vae(header, configs["vae"], dtype)
    image_encoder = _load_clip(header, configs["image_encoder"], dtype)
    return assemble_pipeline({"unet": unet, "vae": vae, "image_encoder": image_encoder}, architecture_family(arch))


def load_unet_file(header: Header, dtype: torch.dtype, config: dict, option: str = "model"):
    """An SVD UNet from a safetensors file in Stability's layout (prefixed or bare) or in diffusers' layout."""
    from diffusers import UNetSpatioTemporalConditionModel

    keys = header.tensors
    if "conv_in.weight" in keys:
        locate = lambda key: (key, None, None)  # noqa: E731 - diffusers layout: names are already ours
    else:
        prefix = UNET_PREFIX if any(k.startswith(UNET_PREFIX) for k in keys) else ""
        locate = lambda key: (prefix + unet_key(key, config), None, None)  # noqa: E731
    return _load_component(header, lambda: UNetSpatioTemporalConditionModel(**config), locate, dtype, option)


def _load_vae(header: Header, config: dict, dtype: torch.dtype):
    """The file's VAE: the temporal one of svd*.safetensors, or, for the *_image_decoder and SV3D files, diffusers'
    per-frame AutoencoderKL, whose decode (like sgm's) runs `post_quant_conv` before the decoder where the file
    has one (not SV3D's: its architecture's config says so)."""
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder

    levels = len(config["block_out_channels"])
    encoder_prefix = next(
        (p for p in (SV3D_VAE_ENCODER_PREFIX, VAE_ENCODER_PREFIX) if header.has(p + "encoder.")), VAE_PREFIX
    )
    # SGM counts num_res_blocks + 1 resnets per decoder level; the file says how many it has.
    level0 = re.compile(re.escape(VAE_PREFIX) + r"decoder\.up\.0\.block\.(\d+)\.")
    resnets = {m[1] for k in header.tensors if (m := level0.match(k))}
    config = {**config, "layers_per_block": max(len(resnets) - 1, 1)}
    per_frame = header.has(VAE_PREFIX + "post_quant_conv.") or encoder_prefix == SV3D_VAE_ENCODER_PREFIX

    def locate(key: str):
        if key.startswith("post_quant_conv."):
            return VAE_PREFIX + key, None, None
        name, transform = vae_key(key, levels, encoder_prefix)
        if key.startswith("quant_conv.") and name not in header.tensors:
            return None, _identity_conv, None  # SGM's AutoencodingEngine has no quant_conv: identity
        return name, transform, None

    if per_frame:
        build = lambda: AutoencoderKL(**{"up_block_types": ("UpDecoderBlock2D",) * levels, **config})  # noqa: E731
    else:
        build = lambda: AutoencoderKLTemporalDecoder(**config)  # noqa: E731
    return _load_component(header, build, locate, dtype)


def _identity_conv(t: torch.Tensor) -> torch.Tensor:
    """`t` (a 1x1 convolution's weight or bias) as the identity."""
    import torch

    if t.dim() == 1:
        return torch.zeros_like(t)
    return torch.eye(t.shape[0], dtype=t.dtype).reshape(t.shape)


def _load_clip(header: Header, config: dict, dtype: torch.dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with quiet_transformers():
        return _load_component(
            header, lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**config)), clip_key, dtype
        )


def _load_component(header: Header, build, locate, dtype: torch.dtype, option: str = "model"):
    """Build a module without memory, then give it each tensor read from the file (renamed, converted)."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open

    with init_empty_weights(include_buffers=False):
        module = build()
    wanted = module.state_dict(keep_vars=True)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(header.path), framework="pt", device="cpu") as f:
        for key, empty in wanted.items():
            name, transform, rows = locate(key)
            if name is None:  # made here, not read (see _identity_conv)
                state[key] = transform(torch.empty(empty.shape, dtype=dtype))
                continue
            if name not in header.tensors:
                raise ModelLoadError(
                    f"{ref(option)} {header.path}: incomplete: it lacks {name} (the file is damaged, or is a "
                    "variant of SVD svd cannot load).",
                    path=header.path,
                )
            if rows is None:
                tensor = f.get_tensor(name)
            else:
                part, parts = rows
                n = header.tensors[name][1][0] // parts
                tensor = f.get_slice(name)[part * n : (part + 1) * n]
            tensor = tensor.to(dtype)
            if transform is not None:
                tensor = transform(tensor)
            if tuple(tensor.shape) != tuple(empty.shape):
                raise ModelLoadError(
                    f"{ref(option)} {header.path}: {name} has shape {tuple(tensor.shape)} where this model "
                    f"needs {tuple(empty.shape)}; the file is another architecture.",
                    path=header.path,
                )
            state[key] = tensor.contiguous()
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval().requires_grad_(False)
