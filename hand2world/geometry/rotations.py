"""Rotation representations: axis-angle, quaternions, 6-D and 9-D (batched torch).

Design choices:
- ``axis_angle_to_matrix`` is Rodrigues' formula with Taylor expansions of ``sin(t)/t`` and
  ``(1 - cos(t))/t^2`` below a small angle, so it is exact and differentiable at 0.
- ``matrix_to_axis_angle`` goes through a quaternion picked by Shepperd's method (the
  largest of ``|w|, |x|, |y|, |z|`` as pivot), then ``angle = 2 atan2(|v|, w)``: stable at
  both 0 and pi, where the trace-based ``acos`` formula loses its axis.
- Quaternions are ``(w, x, y, z)``, returned with ``w >= 0``.
- 6-D rotations (Zhou et al., CVPR 2019) are the first two *columns* of the matrix,
  ``[r00, r10, r20, r01, r11, r21]``; decoding is Gram-Schmidt. 9-D (HandWorld's camera
  rotation) is the row-major flattened matrix; decoding projects onto SO(3) by SVD, so noisy
  network outputs become the nearest rotation.
- All functions accept torch or NumPy and batch over leading dimensions; the two solver helpers
  ``rotation_angle_deg`` and ``kabsch_rotation`` are NumPy in, NumPy out (float64), for the
  annotation and evaluation solvers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hand2world.geometry.camera import as_tensor

__all__ = [
    "axis_angle_to_matrix",
    "kabsch_rotation",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "matrix_to_rotation_9d",
    "quaternion_to_matrix",
    "rotation_6d_to_matrix",
    "rotation_9d_to_matrix",
    "rotation_angle_deg",
]

_SMALL = 1e-4  # radians: below this, series expansions replace sin(t)/t etc.


def axis_angle_to_matrix(axis_angle: Any) -> Tensor:
    """Rotation vectors ``[..., 3]`` (axis times angle in radians) -> matrices ``[..., 3, 3]``."""
    aa = as_tensor(axis_angle)
    theta2 = (aa * aa).sum(dim=-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < _SMALL**2
    safe = torch.where(small, torch.ones_like(theta2), theta2).sqrt()  # no sqrt(0): finite gradients at 0
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)  # sin t / t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))  # (1 - cos t) / t^2
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(skew)
    return eye + a * skew + b * (skew @ skew)


def matrix_to_quaternion(R: Any) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` ``(w, x, y, z)``, ``w >= 0``."""
    R = as_tensor(R)
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 |q_i|^2 for i = w, x, y, z.
    sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    q_abs = sq.clamp_min(1e-20).sqrt()  # 2 |q_i| (clamped: finite gradients where q_i = 0)
    # Row i: 4 |q_i| times the quaternion, computed with component i as the pivot.
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )  # [..., 4, 4]
    cand = cand / (2.0 * q_abs[..., :, None]).clamp_min(0.1)  # the chosen pivot has 2|q_i| >= 1
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: Any) -> Tensor:
    """Quaternions ``[..., 4]`` ``(w, x, y, z)`` (normalised here) -> rotation matrices ``[..., 3, 3]``."""
    q = torch.nn.functional.normalize(as_tensor(q), dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def matrix_to_axis_angle(R: Any) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> rotation vectors ``[..., 3]`` with angle in ``[0, pi]``.

    At exactly pi the sign of the axis is arbitrary (both vectors are the same rotation).
    """
    q = matrix_to_quaternion(R)
    w, v = q[..., :1], q[..., 1:]
    s2 = (v * v).sum(dim=-1, keepdim=True)  # sin^2(angle / 2)
    small = s2 < _SMALL**2
    s = torch.where(small, torch.ones_like(s2), s2).sqrt()  # no sqrt(0): finite gradients at 0
    # angle / sin(angle / 2), angle = 2 atan2(s, w); near 0 its series 2 / w (1 - s^2 / (3 w^2)).
    series = 2.0 / w * (1.0 - s2 / (3.0 * w * w))
    scale = torch.where(small, series, 2.0 * torch.atan2(s, w) / s)
    return v * scale


def matrix_to_rotation_6d(R: Any) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> 6-D ``[..., 6]``: first column then second column."""
    R = as_tensor(R)
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def rotation_6d_to_matrix(d6: Any) -> Tensor:
    """6-D ``[..., 6]`` (two column vectors, any scale) -> rotations ``[..., 3, 3]`` (Gram-Schmidt)."""
    d6 = as_tensor(d6)
    a, b = d6[..., :3], d6[..., 3:]
    c0 = torch.nn.functional.normalize(a, dim=-1)
    c1 = torch.nn.functional.normalize(b - (c0 * b).sum(dim=-1, keepdim=True) * c0, dim=-1)
    c2 = torch.linalg.cross(c0, c1, dim=-1)
    return torch.stack([c0, c1, c2], dim=-1)


def matrix_to_rotation_9d(R: Any) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> 9-D ``[..., 9]`` (row-major flattening)."""
    R = as_tensor(R)
    return R.reshape(*R.shape[:-2], 9)


def rotation_9d_to_matrix(d9: Any) -> Tensor:
    """9-D ``[..., 9]`` -> nearest rotation matrices ``[..., 3, 3]`` (SVD projection, det = +1)."""
    M = as_tensor(d9)
    M = M.reshape(*M.shape[:-1], 3, 3)
    U, _, Vh = torch.linalg.svd(M)
    det = torch.det(U @ Vh)
    fix = torch.ones(*M.shape[:-2], 3, dtype=M.dtype, device=M.device)
    fix[..., 2] = det.sign()
    return (U * fix[..., None, :]) @ Vh


def rotation_angle_deg(R: Any) -> Any:
    """Angle of rotation matrices ``[..., 3, 3]`` in degrees (float64; a float for one matrix)."""
    tr = np.trace(np.asarray(R, np.float64), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def kabsch_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation ``R [3, 3]`` minimising ``|b - R a|`` for unit bearings ``a, b [N, 3]`` (not centred)."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt
