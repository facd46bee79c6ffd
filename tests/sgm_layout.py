"""Writing a diffusers SVD pipeline as one safetensors file in Stability's (generative-models, "SGM") layout.

This is the test's own inverse of svd_cli/models/single_file.py, derived independently: it walks the diffusers
modules in the order Stability's VideoUNet builds its blocks (every resnet and every down/upsampler is one
numbered block; attention sits at index 1 of its block) instead of computing block numbers from names, and
it packs OpenCLIP's tensors the way open_clip stores them. If the two disagree anywhere, loading the written
file either fails or gives other frames.
"""

from __future__ import annotations

from pathlib import Path

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip


def _params(module, prefix: str, out: dict, rename=lambda name: name, change=lambda name, t: t) -> None:
    for name, tensor in module.named_parameters():
        out[prefix + rename(name)] = change(name, tensor.detach().clone())


def _video_resnet(block, prefix: str, out: dict) -> None:
    """SGM's VideoResBlock: the spatial ResBlock's own names, its temporal twin under time_stack."""

    def rename(name):
        layer, leaf = name.split(".", 1)
        return f"{RESNET[layer]}.{leaf}"

    _params(block.spatial_res_block, prefix, out, rename)
    _params(block.temporal_res_block, prefix + "time_stack.", out, rename)
    out[prefix + "time_mixer.mix_factor"] = block.time_mixer.mix_factor.detach().clone()


def _video_transformer(block, prefix: str, out: dict) -> None:
    def rename(name):
        name = name.replace("temporal_transformer_blocks.", "time_stack.")
        return name.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace(
            "time_pos_embed.linear_2.", "time_pos_embed.2."
        )

    _params(block, prefix, out, rename)


def unet_tensors(unet, prefix: str = "model.diffusion_model.") -> dict:
    out: dict[str, torch.Tensor] = {}
    _params(
        unet.time_embedding, prefix + "time_embed.", out, lambda n: n.replace("linear_1", "0").replace("linear_2", "2")
    )
    _params(
        unet.add_embedding, prefix + "label_emb.0.", out, lambda n: n.replace("linear_1", "0").replace("linear_2", "2")
    )
    _params(unet.conv_in, prefix + "input_blocks.0.0.", out)
    block = 1
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None)
        for i, resnet in enumerate(down.resnets):
            _video_resnet(resnet, f"{prefix}input_blocks.{block}.0.", out)
            if attentions is not None:
                _video_transformer(attentions[i], f"{prefix}input_blocks.{block}.1.", out)
            block += 1
        if down.downsamplers is not None:
            _params(down.downsamplers[0].conv, f"{prefix}input_blocks.{block}.0.op.", out)
            block += 1
    _video_resnet(unet.mid_block.resnets[0], prefix + "middle_block.0.", out)
    _video_transformer(unet.mid_block.attentions[0], prefix + "middle_block.1.", out)
    _video_resnet(unet.mid_block.resnets[1], prefix + "middle_block.2.", out)
    block = 0
    for up in unet.up_blocks:
        attentions = getattr(up, "attentions", None)
        for i, resnet in enumerate(up.resnets):
            _video_resnet(resnet, f"{prefix}output_blocks.{block}.0.", out)
            slot = 1
            if attentions is not None:
                _video_transformer(attentions[i], f"{prefix}output_blocks.{block}.1.", out)
                slot = 2
            if i == len(up.resnets) - 1 and up.upsamplers is not None:
                _params(up.upsamplers[0].conv, f"{prefix}output_blocks.{block}.{slot}.conv.", out)
            block += 1
    _params(unet.conv_norm_out, prefix + "out.0.", out)
    _params(unet.conv_out, prefix + "out.2.", out)
    return out


def _ae_resnet(block, prefix: str, out: dict) -> None:
    _params(block, prefix, out, lambda n: n.replace("conv_shortcut", "nin_shortcut"))


def _ae_attention(block, prefix: str, out: dict) -> None:
    names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

    def rename(name):
        layer, leaf = name.rsplit(".", 1)
        return f"{names[layer]}.{leaf}"

    def as_conv(name, t):  # SGM's AttnBlock uses 1x1 convolutions
        return t[:, :, None, None] if t.dim() == 2 else t

    _params(block, prefix, out, rename, as_conv)


def _encoder(encoder, prefix: str, out: dict) -> None:
    _params(encoder.conv_in, prefix + "conv_in.", out)
    for level, down in enumerate(encoder.down_blocks):
        for i, resnet in enumerate(down.resnets):
            _ae_resnet(resnet, f"{prefix}down.{level}.block.{i}.", out)
        if down.downsamplers is not None:
            _params(down.downsamplers[0].conv, f"{prefix}down.{level}.downsample.conv.", out)
    _ae_resnet(encoder.mid_block.resnets[0], prefix + "mid.block_1.", out)
    _ae_attention(encoder.mid_block.attentions[0], prefix + "mid.attn_1.", out)
    _ae_resnet(encoder.mid_block.resnets[1], prefix + "mid.block_2.", out)
    _params(encoder.conv_norm_out, prefix + "norm_out.", out)
    _params(encoder.conv_out, prefix + "conv_out.", out)


def _decoder(decoder, prefix: str, out: dict) -> None:
    """SGM's decoder; a temporal one (SVD's VideoDecoder) has each resnet's temporal twin and a time_mix_conv."""
    temporal = hasattr(decoder, "time_conv_out")

    def resnet(block, at):
        if not temporal:
            _ae_resnet(block, at, out)
            return
        _ae_resnet(block.spatial_res_block, at, out)
        _params(block.temporal_res_block, at + "time_stack.", out,
                lambda n: f"{RESNET[n.split('.', 1)[0]]}.{n.split('.', 1)[1]}")  # fmt: skip
        out[at + "mix_factor"] = block.time_mixer.mix_factor.detach().clone()

    _params(decoder.conv_in, prefix + "conv_in.", out)
    for i, block in enumerate(decoder.mid_block.resnets):
        resnet(block, f"{prefix}mid.block_{i + 1}.")
    _ae_attention(decoder.mid_block.attentions[0], prefix + "mid.attn_1.", out)
    levels = len(decoder.up_blocks)
    for j, up in enumerate(decoder.up_blocks):  # diffusers runs the deepest level first
        level = levels - 1 - j
        for i, block in enumerate(up.resnets):
            resnet(block, f"{prefix}up.{level}.block.{i}.")
        if up.upsamplers is not None:
            _params(up.upsamplers[0].conv, f"{prefix}up.{level}.upsample.conv.", out)
    _params(decoder.conv_norm_out, prefix + "norm_out.", out)
    _params(decoder.conv_out, prefix + "conv_out.", out)
    if temporal:
        _params(decoder.time_conv_out, prefix + "conv_out.time_mix_conv.", out)


def vae_tensors(vae) -> dict:
    """The VAE as SVD's checkpoints hold it. svd*.safetensors: the autoencoder under first_stage_model (no
    quant_conv), and the conditioning image's encoder with its quant_conv under conditioner.embedders.3.
    The *_image_decoder files (a diffusers AutoencoderKL here): a whole AutoencoderKL, quant_conv and
    post_quant_conv included, under both prefixes."""
    out: dict[str, torch.Tensor] = {}
    per_frame = getattr(vae, "post_quant_conv", None) is not None
    for at, whole in (("first_stage_model.", True), ("conditioner.embedders.3.encoder.", per_frame)):
        _encoder(vae.encoder, at + "encoder.", out)
        if whole:
            _decoder(vae.decoder, at + "decoder.", out)
        if per_frame or at != "first_stage_model.":
            _params(vae.quant_conv, at + "quant_conv.", out)
        if per_frame:
            _params(vae.post_quant_conv, at + "post_quant_conv.", out)
    return out


def sv3d_vae_tensors(vae) -> dict:
    """The VAE as SV3D's files hold it: first_stage_model is the decoder alone (sgm's AutoencodingEngine, no
    post_quant_conv); the conditioning embedder (conditioner.embedders.1) holds a whole AutoencoderKL, whose
    decoder (here the same one) and post_quant_conv (here a random one, which loading must not use) never run."""
    out: dict[str, torch.Tensor] = {}
    _decoder(vae.decoder, "first_stage_model.decoder.", out)
    at = "conditioner.embedders.1.encoder."
    _encoder(vae.encoder, at + "encoder.", out)
    _decoder(vae.decoder, at + "decoder.", out)
    _params(vae.quant_conv, at + "quant_conv.", out)
    channels = vae.config.latent_channels
    out[at + "post_quant_conv.weight"] = torch.randn(channels, channels, 1, 1)
    out[at + "post_quant_conv.bias"] = torch.randn(channels)
    return out


def clip_tensors(image_encoder, prefix: str = "conditioner.embedders.0.open_clip.model.visual.") -> dict:
    vision = image_encoder.vision_model
    out = {
        prefix + "class_embedding": vision.embeddings.class_embedding.detach().clone(),
        prefix + "conv1.weight": vision.embeddings.patch_embedding.weight.detach().clone(),
        prefix + "positional_embedding": vision.embeddings.position_embedding.weight.detach().clone(),
        prefix + "proj": image_encoder.visual_projection.weight.detach().t().contiguous(),
    }
    _params(vision.pre_layrnorm, prefix + "ln_pre.", out)
    _params(vision.post_layernorm, prefix + "ln_post.", out)
    for i, layer in enumerate(vision.encoder.layers):
        at = f"{prefix}transformer.resblocks.{i}."
        attn = layer.self_attn
        for leaf in ("weight", "bias"):
            out[at + f"attn.in_proj_{leaf}"] = torch.cat(
                [getattr(p, leaf).detach() for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
            )
        _params(attn.out_proj, at + "attn.out_proj.", out)
        _params(layer.layer_norm1, at + "ln_1.", out)
        _params(layer.layer_norm2, at + "ln_2.", out)
        _params(layer.mlp.fc1, at + "mlp.c_fc.", out)
        _params(layer.mlp.fc2, at + "mlp.c_proj.", out)
    return out


def write_sgm_file(pipe, path: Path, *, dtype: torch.dtype | None = None) -> Path:
    """Save `pipe`'s UNet, VAE and CLIP image encoder as one SGM-layout safetensors file (an *_image_decoder
    file when the VAE is a per-frame AutoencoderKL, an SV3D file when it decodes without a post_quant_conv)."""
    from safetensors.torch import save_file

    sv3d = not getattr(pipe.vae.config, "use_post_quant_conv", True)  # SV3D's decoder runs without one
    vae = sv3d_vae_tensors(pipe.vae) if sv3d else vae_tensors(pipe.vae)
    tensors = {**unet_tensors(pipe.unet), **vae, **clip_tensors(pipe.image_encoder)}
    # What else Stability's files carry and svd must ignore: the EDM denoiser's buffers, text-tower leftovers.
    tensors["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.tensor(4.6)
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path
