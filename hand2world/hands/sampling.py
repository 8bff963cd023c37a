"""Random plausible hand poses (for tests, synthetic data and fitting benchmarks).

Design choices:
- Articulation is sampled in each joint's anatomical frame (``HandModel.joint_frames``:
  flexion, abduction, twist axes) within rough anatomical ranges, then mapped to the model's
  axis-angle ``hand_pose``; the same ranges therefore mean the same motion on left and right
  hands and on the open and MANO models.
- Global orientation is uniform on SO(3) (``global_orient=True``) or zero.
- A ``torch.Generator`` makes draws reproducible.
"""

from __future__ import annotations

import torch

from hand2world.geometry.rotations import matrix_to_axis_angle, quaternion_to_matrix
from hand2world.hands.model import HandModel, HandPose
from hand2world.hands.skeleton import NUM_BETAS, NUM_HAND_JOINTS

__all__ = ["ANATOMICAL_RANGES", "anatomical_to_hand_pose", "random_hand_pose"]

#: (low, high) radians for (flexion, abduction, twist) per joint kind
ANATOMICAL_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "thumb_cmc": ((-0.3, 0.6), (-0.4, 0.4), (-0.2, 0.2)),
    "thumb_mcp": ((0.0, 0.8), (-0.1, 0.1), (-0.1, 0.1)),
    "thumb_ip": ((-0.1, 1.2), (-0.05, 0.05), (-0.05, 0.05)),
    "mcp": ((-0.2, 1.4), (-0.25, 0.25), (-0.1, 0.1)),
    "pip": ((0.0, 1.6), (-0.05, 0.05), (-0.05, 0.05)),
    "dip": ((0.0, 1.2), (-0.05, 0.05), (-0.05, 0.05)),
}


def _uniform(
    low: float, high: float, n: int, gen: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, dtype=dtype)


def anatomical_to_hand_pose(model: HandModel, anat: torch.Tensor) -> torch.Tensor:
    """Map per-joint (flexion, abduction, twist) angles to the model's axis-angle ``hand_pose``.

    Args:
        model: supplies ``joint_frames`` (columns = the anatomical axes of each joint).
        anat: ``[B, 15, 3]`` radians; positive flexion curls a finger toward the palm.

    Returns:
        ``[B, 45]`` in ``anat``'s dtype.
    """
    frames = model.joint_frames[1:].to(anat.dtype)  # [15, 3, 3] columns = axes
    return torch.einsum("jab,njb->nja", frames, anat).reshape(anat.shape[0], 3 * NUM_HAND_JOINTS)


def random_rotation(
    batch: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniformly distributed rotations as axis-angle ``[B, 3]``."""
    q = torch.randn(batch, 4, generator=generator, dtype=torch.float64)
    rot = quaternion_to_matrix(q)  # a normalised Gaussian 4-vector is uniform on SO(3)
    return matrix_to_axis_angle(rot).to(dtype)


def random_hand_pose(
    model: HandModel,
    batch: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    betas_range: float = 2.0,
    global_orient: bool = True,
    scale: float = 1.0,
) -> HandPose:
    """Sample plausible hands.

    Args:
        model: supplies the anatomical joint frames.
        batch: number of hands ``B``.
        generator: optional RNG.
        betas_range: betas uniform in ``[-betas_range, betas_range]``.
        global_orient: uniform random orientation (else zero).
        scale: multiplies every articulation range (0 gives the flat hand).
    Returns:
        ``HandPose`` with ``transl = 0``.
    """
    kinds = ["thumb_cmc", "thumb_mcp", "thumb_ip"] + ["mcp", "pip", "dip"] * 4
    anat = (
        torch.stack(
            [
                torch.stack(
                    [_uniform(lo, hi, batch, generator, torch.float64) for lo, hi in ANATOMICAL_RANGES[k]], -1
                )
                for k in kinds
            ],
            1,
        )
        * scale
    )  # [B, 15, 3]
    hand_pose = anatomical_to_hand_pose(model, anat)
    betas = (torch.rand(batch, NUM_BETAS, generator=generator, dtype=torch.float64) * 2 - 1) * betas_range
    orient = random_rotation(batch, generator, torch.float64) if global_orient else torch.zeros(batch, 3)
    return HandPose(
        orient.to(dtype), hand_pose.to(dtype), betas.to(dtype), torch.zeros(batch, 3, dtype=dtype)
    )
