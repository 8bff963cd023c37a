"""Explicit KV cache for block-causal (streaming) inference of the DiT.

Design choices:
- Preallocated per layer: keys and values ``[B, heads, capacity_tokens, head_dim]``, sized
  from the model config (sink + window + one block of frames), so a stream runs at constant
  memory with no reallocation.
- Keys are stored after rotary embedding, at the frame positions the cache hands out
  (``next_position``). The model writes a block's keys/values after the cached ones and
  attends over ``[0, length + new)``; ``commit`` makes them part of the context. Denoising
  steps of one block therefore run with ``commit=False`` (nothing kept) and the final clean
  pass with ``commit=True`` (the CausVid / Self-Forcing pattern).
- ``evict(window, sink)`` keeps the first ``sink`` frames (the scene frame) and the last
  ``window`` frames, moves the window next to the sink and re-rotates the moved keys by the
  frame offset so cached positions stay contiguous (StreamingLLM-style positions within the
  cache): relative distances never exceed what the model saw in training.
- Pure tensor bookkeeping: no I/O, no model code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hand2world.models.rope import RotaryEmbedding3D

__all__ = ["KVCache"]


class KVCache:
    """Per-layer key/value store for one batch of streams.

    Args:
        num_layers: transformer blocks.
        batch: streams decoded together.
        num_heads, head_dim: attention shape.
        tokens_per_frame: latent tokens of one frame.
        capacity_frames: frames the cache can hold (context + the block being generated).
        rope: the model's rotary embedding (used to re-position keys on eviction).
        dtype, device: storage.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, head_dim: int, tokens_per_frame: int,
                 capacity_frames: int, rope: RotaryEmbedding3D, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        cap = capacity_frames * tokens_per_frame
        self.k = [torch.zeros(batch, num_heads, cap, head_dim, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.tokens_per_frame = tokens_per_frame
        self.capacity_frames = capacity_frames
        self.rope = rope
        self.frames = 0  # committed frames in the cache
        self.seen_frames = 0  # frames ever committed (stream position, for callers)

    @property
    def length(self) -> int:
        """Committed tokens."""
        return self.frames * self.tokens_per_frame

    @property
    def next_position(self) -> int:
        """Rotary frame position of the next frame written (positions are contiguous within the cache)."""
        return self.frames

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store a block's keys/values after the committed ones; return the keys/values to attend.

        Args:
            layer: block index.
            k, v: ``[B, heads, n, head_dim]`` (keys already rotated at ``next_position`` onwards).

        Returns:
            Keys and values ``[B, heads, length + n, head_dim]`` (views into the cache).
        """
        n = k.shape[2]
        end = self.length + n
        if end > self.k[layer].shape[2]:
            raise RuntimeError(f"KV cache full: {self.frames} frames + {n // self.tokens_per_frame} new > "
                               f"capacity {self.capacity_frames}; call evict(window, sink) first")
        self.k[layer][:, :, self.length:end] = k.detach()
        self.v[layer][:, :, self.length:end] = v.detach()
        if k.requires_grad or v.requires_grad:
            # Training through a rollout (self-forcing): the context stays detached storage, the
            # block's own keys/values keep their graph; copies, so later writes cannot break backward.
            return (torch.cat([self.k[layer][:, :, :self.length], k], 2),
                    torch.cat([self.v[layer][:, :, :self.length], v], 2))
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def commit(self, num_frames: int) -> None:
        """Keep the last written ``num_frames`` frames as context."""
        if self.frames + num_frames > self.capacity_frames:
            raise RuntimeError("commit beyond capacity")
        self.frames += num_frames
        self.seen_frames += num_frames

    def evict(self, window: int, sink: int = 1) -> int:
        """Keep the first ``sink`` and last ``window`` frames; return how many frames were dropped."""
        if self.frames <= sink + window:
            return 0
        n = self.tokens_per_frame
        drop = self.frames - sink - window
        src, dst = (sink + drop) * n, sink * n
        for layer in range(len(self.k)):
            kept_k = self.k[layer][:, :, src:self.frames * n].clone()
            self.k[layer][:, :, dst:dst + window * n] = self.rope.shift_frames(kept_k, -float(drop))
            self.v[layer][:, :, dst:dst + window * n] = self.v[layer][:, :, src:self.frames * n].clone()
        self.frames = sink + window
        return drop

    def reset(self) -> None:
        """Empty the cache (a new stream); storage is kept."""
        self.frames = 0
        self.seen_frames = 0
