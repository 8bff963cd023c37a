"""Pinhole cameras in the OpenCV convention: intrinsics, projection, rigid transforms, look-at.

Design choices:
- Convention: camera x right, y down, z forward; metres; ``w2c`` / ``c2w`` are 4x4 rigid
  transforms, ``K`` is 3x3 in pixels of the image it describes.
- Pixel coordinates are continuous with pixel ``(i, j)`` covering ``[i, i+1) x [j, j+1)``,
  so its centre is ``(i + 0.5, j + 0.5)`` and the image centre is ``(W/2, H/2)``. This is the
  convention of MediaPipe's normalised landmarks times the image size, it makes resizing an
  exact scaling of ``K`` (``scale_intrinsics``) and it is what ``plucker_rays`` samples.
- Everything is torch and batches over leading dimensions with broadcasting; NumPy arrays
  (and nested lists) are accepted and converted. Integer input becomes the default float
  dtype; mixed float inputs are promoted to a common dtype.
- Rigid inverses use the transpose (``invert_rigid``), not a general 4x4 inverse: exact for
  rigid transforms and cheaper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_tensor",
    "backproject",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "invert_rigid",
    "look_at",
    "make_rigid",
    "project",
    "relative_c2w",
    "scale_intrinsics",
    "transform_points",
]


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """Convert ``x`` (tensor, NumPy array, list, scalar) to a floating tensor.

    Tensors and NumPy arrays keep their float dtype; Python numbers and lists become
    ``torch.get_default_dtype()`` (so a default argument such as ``up=(0, -1, 0)`` never
    promotes float32 inputs to float64), as does integer or boolean input. With ``like``, the
    result is moved to ``like``'s device and promoted with its dtype.
    """
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray | np.generic):
        t = torch.as_tensor(np.asarray(x))
    else:
        t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if like is not None:
        t = t.to(device=like.device, dtype=torch.promote_types(t.dtype, like.dtype))
    return t


def _common(*xs: Any) -> list[Tensor]:
    """Convert several inputs to floating tensors with one promoted dtype (device of the first tensor)."""
    ts = [as_tensor(x) for x in xs]
    dtype = ts[0].dtype
    for t in ts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    device = next((x.device for x in xs if isinstance(x, Tensor)), ts[0].device)
    return [t.to(device=device, dtype=dtype) for t in ts]


def make_rigid(R: Any, t: Any) -> Tensor:
    """Assemble 4x4 rigid transforms from ``R [..., 3, 3]`` and ``t [..., 3]`` (broadcast)."""
    R, t = _common(R, t)
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = torch.zeros(*batch, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def invert_rigid(T: Any) -> Tensor:
    """Inverse of rigid transforms ``T [..., 4, 4]`` (``[R | t]`` -> ``[R^T | -R^T t]``)."""
    T = as_tensor(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def relative_c2w(c2w: Any) -> Tensor:
    """Make a clip's camera poses relative to its first frame.

    ``rel[t] = inv(c2w[0]) @ c2w[t]``: the first frame becomes the identity and the result
    does not change when the whole world frame moves (``c2w -> G @ c2w`` for any rigid ``G``).

    Args:
        c2w: ``[..., T, 4, 4]`` camera-to-world poses.

    Returns:
        ``[..., T, 4, 4]`` poses in the first camera's frame.
    """
    c2w = as_tensor(c2w)
    if c2w.ndim < 3:
        raise ValueError(f"relative_c2w needs [..., T, 4, 4], got {tuple(c2w.shape)}")
    return invert_rigid(c2w[..., :1, :, :]) @ c2w


def transform_points(T: Any, points: Any) -> Tensor:
    """Apply 4x4 transforms ``T [..., 4, 4]`` to ``points [..., N, 3]`` -> ``[..., N, 3]``."""
    T, points = _common(T, points)
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def project(points: Any, K: Any, w2c: Any | None = None) -> Tensor:
    """Project 3-D points to pixel coordinates.

    Args:
        points: ``[..., N, 3]`` in camera coordinates (or world coordinates with ``w2c``).
        K: ``[..., 3, 3]`` intrinsics (broadcast against the points' batch dimensions).
        w2c: optional ``[..., 4, 4]`` world-to-camera applied first.

    Returns:
        ``[..., N, 2]`` continuous pixel coordinates ``(u, v)`` (pixel centres at ``i + 0.5``).
        Points at or behind ``z = 0`` give non-finite or mirrored values: filter by depth first.
    """
    points, K = _common(points, K)
    if w2c is not None:
        points = transform_points(w2c, points)
    proj = points @ K.transpose(-1, -2)
    return proj[..., :2] / proj[..., 2:3]


def backproject(uv: Any, depth: Any, K: Any) -> Tensor:
    """Lift pixels with depth to camera-space points (inverse of ``project``).

    Args:
        uv: ``[..., N, 2]`` pixel coordinates (same convention as ``project``).
        depth: ``[..., N]`` z-depth (distance along the optical axis, not along the ray).
        K: ``[..., 3, 3]`` intrinsics.

    Returns:
        ``[..., N, 3]`` camera-space points with ``z == depth``.
    """
    uv, depth, K = _common(uv, depth, K)
    ones = torch.ones_like(uv[..., :1])
    rays = torch.cat([uv, ones], dim=-1) @ torch.linalg.inv(K).transpose(-1, -2)  # z == 1
    return rays * depth[..., None]


def intrinsics_from_fov(
    fov_deg: float | Any, height: int, width: int, dtype: torch.dtype | None = None
) -> Tensor:
    """Pinhole intrinsics from a *horizontal* field of view, square pixels, centred principal point.

    ``fx = fy = (W / 2) / tan(fov / 2)``, ``cx = W / 2``, ``cy = H / 2``.

    Args:
        fov_deg: horizontal field of view in degrees (scalar or ``[...]`` tensor).
        height, width: image size in pixels.
        dtype: result dtype (default: torch's default float dtype).

    Returns:
        ``[..., 3, 3]`` K.
    """
    fov = as_tensor(fov_deg).to(dtype or torch.get_default_dtype())
    focal = (width / 2.0) / torch.tan(torch.deg2rad(fov) / 2.0)
    K = torch.zeros(*fov.shape, 3, 3, dtype=fov.dtype, device=fov.device)
    K[..., 0, 0] = focal
    K[..., 1, 1] = focal
    K[..., 0, 2] = width / 2.0
    K[..., 1, 2] = height / 2.0
    K[..., 2, 2] = 1.0
    return K


def scale_intrinsics(K: Any, sx: float, sy: float | None = None) -> Tensor:
    """Intrinsics of an image resized by ``(sx, sy)`` (new width = ``sx * W``, height = ``sy * H``).

    With pixel centres at ``i + 0.5`` a resize is an exact scaling of pixel coordinates, so
    the first two rows of ``K`` scale (no half-pixel correction). ``sy`` defaults to ``sx``.
    """
    K = as_tensor(K)
    sy = sx if sy is None else sy
    scale = torch.tensor([sx, sy, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def look_at(eye: Any, target: Any, up: Any = (0.0, -1.0, 0.0)) -> Tensor:
    """Camera-to-world pose of a camera at ``eye`` looking at ``target`` (OpenCV convention).

    The camera's z axis points at the target, its x axis is ``z x up`` (to the right when
    ``up`` is the world's up) and its y axis ``z x x`` points down. If ``up`` is parallel to the
    viewing direction another axis is used so the result is always a valid rotation.

    Args:
        eye, target: ``[..., 3]`` world positions (broadcast).
        up: ``[..., 3]`` world "up" direction. The default ``(0, -1, 0)`` is up for a world frame
            that is itself an OpenCV camera frame (y down), e.g. a clip's first camera; pass
            ``(0, 1, 0)`` or ``(0, 0, 1)`` for y-up or z-up worlds.

    Returns:
        ``[..., 4, 4]`` c2w.
    """
    eye, target, up = _common(eye, target, up)
    batch = torch.broadcast_shapes(eye.shape, target.shape, up.shape)
    eye, target, up = eye.expand(batch), target.expand(batch), up.expand(batch)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.linalg.cross(z, up, dim=-1)
    # Degenerate up (parallel to z): pick the world axis least aligned with z instead.
    bad = x.norm(dim=-1, keepdim=True) < 1e-6 * up.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if bool(bad.any()):
        axes = torch.eye(3, dtype=z.dtype, device=z.device)
        alt = axes[z.abs().argmin(dim=-1)]
        x = torch.where(bad, torch.linalg.cross(z, alt, dim=-1), x)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.linalg.cross(z, x, dim=-1)
    return make_rigid(torch.stack([x, y, z], dim=-1), eye)


def fov_from_intrinsics(K: Any, width: int) -> Tensor:
    """Horizontal field of view in degrees of ``K [..., 3, 3]`` for an image ``width`` pixels wide."""
    K = as_tensor(K)
    return torch.rad2deg(2.0 * torch.atan((width / 2.0) / K[..., 0, 0]))
