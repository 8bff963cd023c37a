"""3-D rotary position embedding in Wan 2.1's layout, with explicit frame positions.

Design choices:
- The head dimension splits into (t, h, w) parts exactly as Wan does (``h = w = 2 *
  (head_dim // 6)``, ``t`` the rest); inside each part consecutive channel pairs rotate
  (interleaved layout), so Wan weights see the same embedding.
- Positions are given, not implied: ``frame_positions`` lets the block-causal path embed a
  block at its place in the stream (KV cache) and lets the cache re-position kept keys after
  eviction (``shift_frames`` rotates only the temporal part by a frame offset, which is
  exact because rotations compose).
- Angles are computed in float64 on the fly (no fixed maximum length, no stored buffers).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RotaryEmbedding3D"]


def _inv_freq(dim: int, theta: float, device: torch.device | None) -> Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))


class RotaryEmbedding3D:
    """Cos/sin tables for video tokens ordered (frame, row, column).

    Args:
        head_dim: attention head size.
        theta: rotary base.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self.h_dim = self.w_dim = 2 * (head_dim // 6)
        self.t_dim = head_dim - self.h_dim - self.w_dim

    def tables(self, frame_positions: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Cos and sin, each ``[L, head_dim // 2]`` (float32), L = frames * height * width.

        Args:
            frame_positions: ``[F]`` position of each frame (any real values).
            height, width: token grid of one frame.
        """
        dev = frame_positions.device
        f = frame_positions.to(torch.float64)[:, None] * _inv_freq(self.t_dim, self.theta, dev)  # [F, t/2]
        h = torch.arange(height, dtype=torch.float64, device=dev)[:, None] * _inv_freq(self.h_dim, self.theta, dev)
        w = torch.arange(width, dtype=torch.float64, device=dev)[:, None] * _inv_freq(self.w_dim, self.theta, dev)
        n_f = f.shape[0]
        ang = torch.cat([
            f[:, None, None, :].expand(n_f, height, width, -1),
            h[None, :, None, :].expand(n_f, height, width, -1),
            w[None, None, :, :].expand(n_f, height, width, -1),
        ], dim=-1).reshape(n_f * height * width, -1)
        return ang.cos().float(), ang.sin().float()

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate interleaved channel pairs.

        Args:
            x: ``[B, H, L, D]``.
            cos, sin: ``[L, D // 2]``.
        """
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)

    def shift_frames(self, x: Tensor, delta: float) -> Tensor:
        """Move already-rotated keys by ``delta`` frames (temporal part only).

        Args:
            x: ``[..., L, D]`` keys rotated at positions p; returns them rotated at ``p + delta``.
        """
        ang = delta * _inv_freq(self.t_dim, self.theta, x.device)
        n = self.t_dim // 2
        cos = torch.ones(self.head_dim // 2, dtype=torch.float64, device=x.device)
        sin = torch.zeros_like(cos)
        cos[:n], sin[:n] = ang.cos(), ang.sin()
        return self.apply(x, cos.float(), sin.float())
