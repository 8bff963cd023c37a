"""The one attention dispatch point of the video models.

Design choices:
- Every attention call in ``hand2world.models`` goes through ``attention(q, k, v, mask, backend)``
  with ``[B, heads, L, head_dim]`` tensors, so changing the backend is one setting.
- Backends: ``"sdpa"`` (``torch.nn.functional.scaled_dot_product_attention``; the default,
  CPU and GPU), ``"flash"`` (flash-attn 2, CUDA, half precision, no mask; falls back to
  SDPA otherwise), ``"math"`` (explicit softmax; the reference the tests compare against).
  The backend is a per-model attribute (``DiT.attention_backend``, resolved by
  ``resolve_attention_backend``: ``"auto"`` takes flash where usable), never a process-wide
  setting: two models in one process may use different backends.
- Block-causal masks are boolean ``[Lq, Lk]`` (True = may attend), built once per forward by
  ``block_causal_mask`` from per-token block indices.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "attention", "available_backends", "block_causal_mask", "resolve_attention_backend"]

BACKENDS = ("sdpa", "math", "flash", "flex")

try:  # optional GPU extra
    from flash_attn import flash_attn_func as _flash_attn_func  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_attn_func = None


def available_backends() -> list[str]:
    """Backends usable in this process."""
    out = ["sdpa", "math"]
    try:
        from torch.nn.attention import flex_attention  # noqa: F401

        out.append("flex")
    except ImportError:  # pragma: no cover - old torch
        pass
    if _flash_attn_func is not None and torch.cuda.is_available():
        out.append("flash")
    return out


def resolve_attention_backend(name: str) -> str:
    """The backend ``name`` means here: ``sdpa`` | ``math`` | ``flash`` | ``flex``, or ``auto`` (flash where
    usable, else SDPA); flash where it is not usable falls back to SDPA (with a warning)."""
    if name == "auto":
        name = "flash" if "flash" in available_backends() else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS} or 'auto'")
    if name == "flash" and "flash" not in available_backends():
        log.warning("flash-attn not usable here; attention stays on SDPA")
        name = "sdpa"
    return name


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, backend: str = "sdpa") -> Tensor:
    """Scaled dot-product attention.

    Args:
        q: ``[B, H, Lq, D]``; k, v: ``[B, H, Lk, D]``.
        mask: optional boolean ``[Lq, Lk]`` (or broadcastable ``[B, H, Lq, Lk]``), True = attend.
        backend: one of ``BACKENDS`` (the calling model's ``attention_backend``).

    Returns:
        ``[B, H, Lq, D]``.
    """
    name = backend
    if name == "flash" and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    if name == "flex":
        return _flex(q, k, v, mask)
    if name == "math":
        scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1) @ v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_COMPILED_FLEX = None


def _flex(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    global _COMPILED_FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = None
    if mask is not None:
        dense = mask if mask.ndim == 2 else mask.reshape(mask.shape[-2:])
        block_mask = create_block_mask(lambda b, h, qi, ki: dense[qi, ki], None, None, q.shape[2], k.shape[2],
                                       device=q.device)
    fn = flex_attention
    if q.is_cuda:
        if _COMPILED_FLEX is None:
            _COMPILED_FLEX = torch.compile(flex_attention)
        fn = _COMPILED_FLEX
    return fn(q, k, v, block_mask=block_mask)


def block_causal_mask(q_blocks: Tensor, k_blocks: Tensor) -> Tensor:
    """Boolean ``[Lq, Lk]`` mask: query token i sees key token j iff ``k_blocks[j] <= q_blocks[i]``.

    Args:
        q_blocks: ``[Lq]`` block index of each query token.
        k_blocks: ``[Lk]`` block index of each key token.
    """
    return k_blocks[None, :] <= q_blocks[:, None]
