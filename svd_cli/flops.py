"""Counting the floating-point operations of one video, without computing it.

Each component runs once on fake tensors (PyTorch's FakeTensorMode: shapes and dtypes only, no memory, no
arithmetic) under `torch.utils.flop_counter.FlopCounterMode`, which adds up the FLOPs of every matrix
multiply, convolution and attention from their shapes. A video is then: the CLIP image encoder once, the VAE
encoder once, the UNet once per step (on a batch of two frames sets with CFG, one without) and the VAE decoder
once over all frames (attention included: on the CPU it is counted with PyTorch's own SDPA formula).
`python -m svd_cli.flops` prints SVD-XT's default video against AnimateLCM's.
"""

from __future__ import annotations

import json
import sys

from .models.architectures import ARCHITECTURES
from .models.decoder import new_decoder, preview_latent_size


def component_flops(arch: str, frames: int, size: tuple[int, int]) -> dict[str, int]:
    """FLOPs of one call of each component of architecture `arch` for a video of `frames` x `size`."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    width, height = size
    unet_cfg, vae_cfg, clip_cfg = ARCHITECTURES[arch]
    factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    latent = (vae_cfg["latent_channels"], height // factor, width // factor)

    # PyTorch counts attention only for its GPU kernels; on the CPU SDPA runs this op, counted the same way.
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}

    def count(run) -> int:
        with FlopCounterMode(display=False, custom_mapping=attention) as counter:
            run()
        return int(counter.get_total_flops())

    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with FakeTensorMode(), torch.no_grad():
        unet = UNetSpatioTemporalConditionModel(**unet_cfg).eval()
        vae = AutoencoderKLTemporalDecoder(**vae_cfg).eval()
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg)).eval()
        tiny_decoder = new_decoder().eval()
        time_ids = torch.zeros(1, 3)

        def unet_call(batch: int):
            sample = torch.zeros(batch, frames, 2 * latent[0], *latent[1:])
            embeddings = torch.zeros(batch, 1, unet_cfg["cross_attention_dim"])
            return lambda: unet(sample, torch.tensor(1.0), embeddings, time_ids.repeat(batch, 1), return_dict=False)

        image = torch.zeros(1, 3, clip_cfg["image_size"], clip_cfg["image_size"])
        return {
            "image_encoder": count(lambda: clip(image)),
            "vae_encoder": count(lambda: vae.encode(torch.zeros(1, 3, height, width))),
            "unet_batch1": count(unet_call(1)),
            "unet_batch2": count(unet_call(2)),
            "decoder": count(lambda: vae.decode(torch.zeros(frames, *latent), num_frames=frames)),
            # TAESD's decoder (decoder = taesd): one frame at a time, so `frames` calls.
            "tiny_decoder": frames * count(lambda: tiny_decoder(torch.zeros(1, *latent))),
            # A live preview (the preview option): the same decoder on every step's prediction, pooled when it is wide.
            "preview": frames
            * count(lambda: tiny_decoder(torch.zeros(1, latent[0], *preview_latent_size(*latent[1:])))),
        }


def video_flops(parts: dict[str, int], steps: int, guided: bool) -> int:
    """FLOPs of a whole video from `component_flops`: encoders once, the UNet per step, the decoder once."""
    unet = parts["unet_batch2"] if guided else parts["unet_batch1"]
    return parts["image_encoder"] + parts["vae_encoder"] + steps * unet + parts["decoder"]


def main(argv: list[str] | None = None) -> int:
    """SVD-XT (25 frames, 1024x576): 25 Euler steps with CFG against 4 AnimateLCM steps without."""
    parts = component_flops("svd-xt", 25, (1024, 576))
    svd = video_flops(parts, steps=25, guided=True)
    lcm = video_flops(parts, steps=4, guided=False)
    report = {
        "components_tflops": {k: round(v / 1e12, 2) for k, v in parts.items()},
        "tiny_decoder_vs_decoder": round(parts["tiny_decoder"] / parts["decoder"], 4),
        "preview_vs_guided_step": round(parts["preview"] / parts["unet_batch2"], 4),
        "svd_xt_25_steps_cfg_tflops": round(svd / 1e12, 1),
        "animatelcm_4_steps_tflops": round(lcm / 1e12, 1),
        "ratio": round(lcm / svd, 4),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
