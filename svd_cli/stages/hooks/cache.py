"""Feature reuse across denoising steps (DeepCache, Ma et al. 2024), for spatio-temporal UNets such as SVD's.

Every `interval`-th step (steps 1, 1 + interval, ...) runs the whole UNet through diffusers' own call and keeps
one feature map: the input of the last up block's second layer, i.e. the output of its first layer (the deep
part of the network, everything below the first down block's last layer, summed up at full resolution). The
steps between run only the outer layers and take that feature map as it was: the embeddings, `conv_in`, the
first down block's layers but its last (the skips the kept layers need), the last up block's layers from the
second on, and the output convolutions. That is the configuration of the authors' SVD script
(horseee/DeepCache, `svd/`, cache_branch 0: the input of `up_blocks[3].resnets[1]`, down block 0's first
layer recomputed), which OneDiff's DeepCache port also runs; their skip arithmetic holds only for two layers a
block, the rule above for any count (svd's `tiny` has one: a reuse step is then `conv_in`, the up block's
second layer and the output).

A reuse step is DeepCache's approximation: with real weights the authors report a small quality loss at
interval 3 for SVD; on random weights only the arithmetic can be checked (tests/test_cache.py: a reuse step on
the features of the same input equals the full call). Each denoiser call of a step keeps its own features (with
the CFG split the unconditional and the conditional half are two calls).
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import OptionError
from .base import Step, StepHook


def check_reusable(unet: Any, interval: int) -> None:
    """Refuse, in one line, a denoiser whose layers the cache cannot split (not a spatio-temporal UNet)."""
    up_blocks, down_blocks = getattr(unet, "up_blocks", None), getattr(unet, "down_blocks", None)
    if not up_blocks or not down_blocks or len(getattr(up_blocks[-1], "resnets", ())) < 2:
        raise OptionError(
            "cache", interval,
            f"this model's denoiser ({type(unet).__name__}) is not a UNet whose outer blocks can run alone; use 1 "
            "(off) with it.",
        )  # fmt: skip


class FeatureCache(StepHook):
    """Full steps every `interval` steps; the steps between reuse the kept deep features (see the module)."""

    def __init__(self, interval: int):
        self.interval = interval
        self.features: dict[int, torch.Tensor] = {}  # per denoiser call of a step (0; or 0 and 1 with CFG split)
        self.full = True
        self.calls = 0

    def start(self, steps: int) -> None:
        self.features.clear()

    def before(self, step: Step) -> None:
        self.full = (step.number - 1) % self.interval == 0
        self.calls = 0

    def module(self, unet: Any) -> Any:
        check_reusable(unet, self.interval)
        return CachedUNet(unet, self)

    def end(self) -> None:
        self.features.clear()  # the next video starts with a full step


class CachedUNet:
    """The UNet as the family's denoiser calls it (same arguments), full or shallow as the step asks."""

    def __init__(self, unet: Any, cache: FeatureCache):
        self.unet = unet
        self.cache = cache
        last = unet.up_blocks[-1]
        # The layer whose output the last up block's second resnet takes (before its skip is concatenated).
        self.kept = last.attentions[0] if getattr(last, "attentions", None) else last.resnets[0]

    def __getattr__(self, name: str) -> Any:  # config, dtype, ...: the UNet's
        return getattr(self.unet, name)

    def __call__(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool = True):
        cache, slot = self.cache, self.cache.calls
        cache.calls += 1
        if cache.full or slot not in cache.features:
            handle = self.kept.register_forward_hook(lambda module, args, out: self._keep(slot, out))
            try:
                return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                                 added_time_ids=added_time_ids, return_dict=return_dict)  # fmt: skip
            finally:
                handle.remove()
        out = self.shallow(sample, timestep, encoder_hidden_states, added_time_ids, cache.features[slot])
        if return_dict:
            from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionOutput

            return UNetSpatioTemporalConditionOutput(sample=out)
        return (out,)

    def _keep(self, slot: int, out) -> None:
        self.cache.features[slot] = out[0] if isinstance(out, tuple) else out

    def shallow(self, sample, timestep, encoder_hidden_states, added_time_ids, features: torch.Tensor):
        """The UNet's forward (diffusers' `UNetSpatioTemporalConditionModel.forward`, steps 1, 2, 5 and 6) over
        the outer layers only, with `features` in place of everything deeper."""
        unet = self.unet
        batch, frames = sample.shape[:2]
        # 1. Time and micro-conditioning embeddings, one per frame.
        timesteps = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], device=sample.device)
        timesteps = (timesteps[None] if timesteps.ndim == 0 else timesteps).to(sample.device).expand(batch)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape((batch, -1)).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)
        emb = emb.repeat_interleave(frames, dim=0, output_size=emb.shape[0] * frames)
        context = encoder_hidden_states.repeat_interleave(
            frames, dim=0, output_size=encoder_hidden_states.shape[0] * frames
        )
        # 2. conv_in, and the first down block's layers but its last: the skips of the kept up-block layers.
        hidden = unet.conv_in(sample.flatten(0, 1))
        indicator = torch.zeros(batch, frames, dtype=hidden.dtype, device=hidden.device)
        skips = [hidden]
        first = unet.down_blocks[0]
        attentions = getattr(first, "attentions", None)
        for index in range(len(first.resnets) - 1):
            hidden = first.resnets[index](hidden, emb, image_only_indicator=indicator)
            if attentions:
                hidden = attentions[index](hidden, encoder_hidden_states=context, image_only_indicator=indicator,
                                           return_dict=False)[0]  # fmt: skip
            skips.append(hidden)
        # 5. The last up block from its second layer, on the kept features, popping skips as the full pass does.
        last = unet.up_blocks[-1]
        attentions = getattr(last, "attentions", None)
        hidden = features
        for index in range(1, len(last.resnets)):
            hidden = last.resnets[index](torch.cat([hidden, skips.pop()], dim=1), emb, image_only_indicator=indicator)
            if attentions:
                hidden = attentions[index](hidden, encoder_hidden_states=context, image_only_indicator=indicator,
                                           return_dict=False)[0]  # fmt: skip
        # 6. Post-process, and back to (batch, frames, channels, height, width).
        hidden = unet.conv_out(unet.conv_act(unet.conv_norm_out(hidden)))
        return hidden.reshape(batch, frames, *hidden.shape[1:])
