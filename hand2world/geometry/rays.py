"""Per-pixel Plücker rays (camera conditioning) and their visualisation.

Design choices:
- ``plucker_rays`` returns channels ``(d, o x d)``: ``d`` the unit world-space direction of
  the ray through each pixel centre ``(u + 0.5, v + 0.5)``, ``o`` the camera centre, so the
  moment ``o x d`` is orthogonal to ``d`` and its norm is the distance from the world origin
  to the ray's line. Poses are expected relative to the clip's first frame
  (``camera.relative_c2w``), which makes the first frame's moments zero.
- Vectorised: one ``[3, 3]`` matrix ``R K^-1`` per camera applied to a shared pixel grid, the
  cross product written out component-wise; no Python loop over pixels or batch items. It
  runs every streaming frame (e.g. 128x128 to 544x384).
- ``plucker_to_rgb`` is for people, not models: colour = direction as a normal map
  (R, G, B = x, y, z of ``d`` mapped from [-1, 1] to [0, 255]; the first frame of a clip is a
  smooth gradient, mostly blue, red growing to the right and green downwards), and brightness
  falls with the moment magnitude, ``1 - 0.6 tanh(|o x d| / moment_scale)``: with the camera at
  the clip start the image is the pure direction map, moving the camera darkens it where
  rays pass far from the start point. A camera turn shifts the colours; a translation
  darkens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hand2world.geometry.camera import _common, as_tensor

__all__ = ["pixel_grid", "plucker_rays", "plucker_to_rgb"]


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32, device: Any = None) -> Tensor:
    """Homogeneous pixel centres ``[3, H * W]`` (row-major: ``u`` fastest): ``(u + 0.5, v + 0.5, 1)``."""
    u = torch.arange(width, dtype=dtype, device=device) + 0.5
    v = torch.arange(height, dtype=dtype, device=device) + 0.5
    grid = torch.empty(3, height, width, dtype=dtype, device=device)
    grid[0] = u[None, :]
    grid[1] = v[:, None]
    grid[2] = 1.0
    return grid.reshape(3, height * width)


def plucker_rays(K: Any, c2w: Any, height: int, width: int) -> Tensor:
    """Plücker ray map of pinhole cameras.

    Args:
        K: ``[..., 3, 3]`` intrinsics in pixels of the ``height x width`` image.
        c2w: ``[..., 4, 4]`` camera-to-world (broadcast against ``K``'s batch dimensions),
            normally relative to the clip's first frame.
        height, width: ray map size.

    Returns:
        ``[..., 6, H, W]``: channels 0-2 the unit direction ``d``, 3-5 the moment ``o x d``
        (world frame), dtype promoted from the inputs.
    """
    K, c2w = _common(K, c2w)
    batch = torch.broadcast_shapes(K.shape[:-2], c2w.shape[:-2])
    n = height * width
    M = c2w[..., :3, :3] @ torch.linalg.inv(K)  # [..., 3, 3]: pixel -> world direction
    d = (M @ pixel_grid(height, width, K.dtype, K.device)).expand(*batch, 3, n)  # [..., 3, HW]
    out = torch.empty(*batch, 6, n, dtype=K.dtype, device=K.device)
    # Written into one preallocated output (a norm over the short dim and cat are slow on CPU).
    inv_norm = torch.rsqrt(d[..., 0, :] ** 2 + d[..., 1, :] ** 2 + d[..., 2, :] ** 2)
    torch.mul(d, inv_norm[..., None, :], out=out[..., :3, :])
    dx, dy, dz = out[..., 0, :], out[..., 1, :], out[..., 2, :]
    o = c2w[..., :3, 3:4].expand(*batch, 3, 1)
    ox, oy, oz = o[..., 0, :], o[..., 1, :], o[..., 2, :]  # [..., 1]
    out[..., 3, :] = oy * dz - oz * dy
    out[..., 4, :] = oz * dx - ox * dz
    out[..., 5, :] = ox * dy - oy * dx
    return out.reshape(*batch, 6, height, width)


def plucker_to_rgb(rays: Any, moment_scale: float = 0.25) -> np.ndarray:
    """Visualise Plücker rays (see the module notes for the encoding).

    Args:
        rays: ``[..., 6, H, W]`` (torch or NumPy).
        moment_scale: moment magnitude (metres) at which brightness has dropped by ~46%.

    Returns:
        ``uint8 [..., H, W, 3]`` RGB.
    """
    r = as_tensor(rays).detach().to("cpu", torch.float32)
    if r.ndim < 3 or r.shape[-3] != 6:
        raise ValueError(f"rays must be [..., 6, H, W], got {tuple(r.shape)}")
    d, m = r[..., :3, :, :], r[..., 3:, :, :]
    color = 0.5 + 0.5 * d.clamp(-1.0, 1.0)
    bright = 1.0 - 0.6 * torch.tanh(m.norm(dim=-3, keepdim=True) / moment_scale)
    rgb = (color * bright * 255.0).round().clamp(0, 255).to(torch.uint8)
    return rgb.movedim(-3, -1).contiguous().numpy()
