"""Feed-forward chunking: run each transformer feed-forward layer on slices of its tokens.

A GEGLU feed-forward expands every token to 8x its width (4x inner, doubled by the gate): at SVD's first
level that is 2560 values for each of 50 x 9216 tokens. Slicing the tokens bounds that temporary without
changing any value, since each token is computed alone. Unlike diffusers' `enable_forward_chunking`, the
slices are a fixed number of tokens, never one sequence or one frame at a time (which starves a GPU).
"""

from __future__ import annotations

import torch
from torch import nn


def _chunked_forward(module: nn.Module, chunk_tokens: int):
    original = type(module).forward

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        shape = hidden_states.shape
        flat = hidden_states.reshape(-1, shape[-1])
        if flat.shape[0] <= chunk_tokens:
            return original(module, hidden_states, *args, **kwargs)
        out = None
        for start in range(0, flat.shape[0], chunk_tokens):
            piece = original(module, flat[start : start + chunk_tokens], *args, **kwargs)
            if out is None:
                out = piece.new_empty(flat.shape[0], piece.shape[-1])
            out[start : start + piece.shape[0]] = piece
        return out.reshape(*shape[:-1], out.shape[-1])

    return forward


def set_feed_forward_chunking(model: nn.Module, chunk_tokens: int | None) -> None:
    """Chunk every diffusers `FeedForward` in `model` to `chunk_tokens` tokens; None restores them."""
    from diffusers.models.attention import FeedForward

    for module in model.modules():
        if isinstance(module, FeedForward):
            if chunk_tokens:
                module.forward = _chunked_forward(module, chunk_tokens)
            elif "forward" in module.__dict__:
                del module.forward
