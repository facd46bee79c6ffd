"""Attention kernels for the UNet and VAE: PyTorch SDPA, xformers, or query-sliced SDPA.

SDPA picks flash or memory-efficient kernels on CUDA, which never hold the full attention matrix. Where
those kernels are missing (Apple MPS, old GPUs, some dtypes), SDPA falls back to the math kernel, whose
score matrix for SVD's 9216-token spatial attention is 9216^2 entries per head and frame. Slicing then runs
SDPA over slices of (batch x heads) and of the queries, so no call holds more than `max_scores` scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import OptionError

DEFAULT_MAX_SCORES = 2**26  # 64 Mi scores: 128 MiB in fp16 per slice


class SlicedSDPAProcessor:
    """Attention like diffusers' AttnProcessor2_0, computed in slices that bound the score matrix."""

    def __init__(self, max_scores: int = DEFAULT_MAX_SCORES):
        self.max_scores = max_scores

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            source_len = (encoder_hidden_states if encoder_hidden_states is not None else hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, source_len, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = self._sliced_sdpa(query, key, value, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _sliced_sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
        batch, heads, q_len, _ = q.shape
        k_len = k.shape[2]
        # Flatten (batch, heads) so slices can cut across both; then cut the queries if still too big.
        q, k, v = (t.reshape(batch * heads, *t.shape[2:]) for t in (q, k, v))
        if mask is not None:
            mask = mask.expand(batch, heads, q_len, k_len).reshape(batch * heads, q_len, k_len)
        rows = max(1, self.max_scores // (q_len * k_len))
        q_chunk = q_len if rows > 1 else max(1, self.max_scores // k_len)
        out = torch.empty_like(q)
        for b0 in range(0, batch * heads, rows):
            b1 = min(batch * heads, b0 + rows)
            for q0 in range(0, q_len, q_chunk):
                q1 = min(q_len, q0 + q_chunk)
                out[b0:b1, q0:q1] = F.scaled_dot_product_attention(
                    q[b0:b1, q0:q1], k[b0:b1], v[b0:b1], attn_mask=None if mask is None else mask[b0:b1, q0:q1]
                )
        return out.reshape(batch, heads, q_len, -1)


def efficient_attention_available(device: torch.device) -> bool:
    """Whether SDPA has a kernel here that never materialises the score matrix."""
    if device.type == "cuda":
        return torch.backends.cuda.mem_efficient_sdp_enabled() or torch.backends.cuda.flash_sdp_enabled()
    # PyTorch's CPU SDPA is a blocked (flash-style) kernel; MPS and others fall back to math.
    return device.type == "cpu"


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:
        return False
    return True


def resolve_attention(mode: str, device: torch.device, slicing_wanted: bool) -> str:
    """Pick the kernel family: `auto` slices only when asked to save memory and SDPA cannot."""
    if mode == "auto":
        if device.type == "cuda" and xformers_available() and not torch.backends.cuda.flash_sdp_enabled():
            return "xformers"
        return "sliced" if slicing_wanted and not efficient_attention_available(device) else "sdpa"
    return mode


def set_attention(modules: list[torch.nn.Module], mode: str, max_scores: int = DEFAULT_MAX_SCORES) -> None:
    """Install one attention processor family on every attention layer of `modules`."""
    from diffusers.models.attention_processor import AttnProcessor2_0, XFormersAttnProcessor

    if mode == "xformers" and not xformers_available():
        raise OptionError("attention", "xformers", 'xformers is not installed; pip install "svd-cli[xformers]".')
    for module in modules:
        if mode == "sliced":
            processor = SlicedSDPAProcessor(max_scores)
        elif mode == "xformers":
            processor = XFormersAttnProcessor()
        else:
            processor = AttnProcessor2_0()
        module.set_attn_processor(processor)
