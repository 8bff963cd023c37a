"""Hand rig of the world: articulation presets, world-frame orientation, batched posing.

Design choices:
- A hand's motion is described by what an animator would key: the wrist position, the
  finger direction ``f`` and palm normal ``n`` in the world (table) frame, and the
  articulation as anatomical (flexion, abduction, twist) angles per finger joint. The
  model's own ``f``/``n`` are measured once per model from its rest joints (fingers: wrist ->
  middle MCP; palm: the way the fingers curl), so the same keys drive the left and the right
  hand, the open model and MANO alike.
- Posing a whole clip is one batched LBS call per hand (``HandModel`` over ``T`` frames).
- Articulation presets are named hand shapes (flat, relaxed, pre-grasp, grasp, fist, point);
  every key adds a little per-joint noise so no two hands look alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hand2world.geometry import matrix_to_axis_angle
from hand2world.hands import HandModel, HandPose
from hand2world.hands.sampling import anatomical_to_hand_pose
from hand2world.hands.skeleton import NUM_HAND_JOINTS, SIDES

__all__ = [
    "PRESETS", "HandRig", "PosedHand", "articulation", "fingertip_point", "frame_from_fn", "grip_point",
    "palm_point",
]

def _shape(thumb: tuple[tuple[float, ...], ...], fingers: tuple[tuple[float, ...], ...],
           index: tuple[tuple[float, ...], ...] | None = None, spread: float = 0.0) -> np.ndarray:
    """``[15, 3]`` (flexion, abduction, twist) per joint: thumb CMC/MCP/IP, then MCP/PIP/DIP of each finger."""
    a = np.zeros((NUM_HAND_JOINTS, 3))
    a[0:3] = thumb
    for k in range(4):
        rows = index if (k == 0 and index is not None) else fingers
        a[3 + 3 * k:6 + 3 * k] = rows
        a[3 + 3 * k, 1] = spread * (1.5 - k) / 1.5  # abduction fans the fingers
    return a


PRESETS: dict[str, np.ndarray] = {
    "flat": _shape(((0.0, 0.0, 0.0), (0.05, 0, 0), (0.05, 0, 0)), ((0.05, 0, 0), (0.05, 0, 0), (0.03, 0, 0))),
    "spread": _shape(((-0.2, 0.3, 0), (0.0, 0, 0), (0.0, 0, 0)), ((0.0, 0, 0), (0.05, 0, 0), (0.03, 0, 0)),
                     spread=0.2),
    "relaxed": _shape(((0.2, 0.1, 0), (0.2, 0, 0), (0.25, 0, 0)), ((0.35, 0, 0), (0.45, 0, 0), (0.25, 0, 0))),
    "pregrasp": _shape(((-0.1, 0.3, 0), (0.15, 0, 0), (0.15, 0, 0)), ((0.25, 0, 0), (0.3, 0, 0), (0.15, 0, 0)),
                       spread=0.1),
    "grasp": _shape(((0.35, 0.25, 0), (0.45, 0, 0), (0.5, 0, 0)), ((0.8, 0, 0), (0.95, 0, 0), (0.55, 0, 0))),
    "fist": _shape(((0.5, 0.2, 0), (0.7, 0, 0), (0.9, 0, 0)), ((1.35, 0, 0), (1.55, 0, 0), (1.05, 0, 0))),
    "point": _shape(((0.5, 0.2, 0), (0.7, 0, 0), (0.9, 0, 0)), ((1.35, 0, 0), (1.55, 0, 0), (1.05, 0, 0)),
                    index=((0.05, 0, 0), (0.05, 0, 0), (0.03, 0, 0))),
}

def articulation(name: str, rng: np.random.Generator, noise: float = 0.08) -> np.ndarray:
    """Preset ``name`` with per-joint noise: ``[15, 3]`` anatomical angles (radians)."""
    a = PRESETS[name] + rng.normal(0.0, noise, (NUM_HAND_JOINTS, 3)) * [1.0, 0.3, 0.2]
    return a


def frame_from_fn(f: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Orthonormal frames ``[..., 3, 3]`` with columns (f, n', f x n'), n' = n made orthogonal to f."""
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    n = n - (n * f).sum(-1, keepdims=True) * f
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return np.stack([f, n, np.cross(f, n)], axis=-1)


@dataclass
class PosedHand:
    """A hand over a clip in world coordinates: ``vertices [T, V, 3]``, ``joints [T, 21, 3]``,
    ``rotation [T, 3, 3]`` and ``wrist [T, 3]`` (the model's rest frame placed in the world),
    ``anat [T, 15, 3]``, ``betas [10]``, ``side``."""

    vertices: np.ndarray
    joints: np.ndarray
    rotation: np.ndarray
    wrist: np.ndarray
    hand_pose: np.ndarray
    betas: np.ndarray
    side: str


class HandRig:
    """Both hand models of one kind with their measured rest directions; poses whole clips at once."""

    def __init__(self, kind: str = "open") -> None:
        self.models = {side: HandModel.load(kind, side=side) for side in SIDES}
        self.model_frames: dict[str, np.ndarray] = {}
        self.faces: dict[str, np.ndarray] = {}
        for side, model in self.models.items():
            with torch.no_grad():
                rest = model.rest_joints()[0].double().numpy()
                curl = np.zeros((1, NUM_HAND_JOINTS, 3))
                curl[0, 3::3, 0] = 1.0  # flex every finger MCP
                pose = HandPose.zeros(1, torch.float64)
                pose.hand_pose = anatomical_to_hand_pose(model, torch.as_tensor(curl))
                bent = model.joints_only(pose)[0].numpy()
            f = rest[9] - rest[0]  # wrist -> middle MCP
            n = bent[12] - rest[12]  # the middle fingertip moves toward the palm side
            self.model_frames[side] = frame_from_fn(f, n)
            self.faces[side] = model.faces.numpy().astype(np.int32)

    def rotation(self, side: str, f: np.ndarray, n: np.ndarray) -> np.ndarray:
        """World rotations ``[..., 3, 3]`` that send the model's finger direction to ``f`` and palm normal to ``n``."""
        return frame_from_fn(f, n) @ self.model_frames[side].T

    def pose(self, side: str, wrist: np.ndarray, rotation: np.ndarray, anat: np.ndarray,
             betas: np.ndarray) -> PosedHand:
        """Pose a hand for a clip.

        Args:
            side: "left" | "right".
            wrist: ``[T, 3]`` world wrist positions; rotation: ``[T, 3, 3]`` world rotations;
            anat: ``[T, 15, 3]`` anatomical angles; betas: ``[10]`` shape.
        """
        model = self.models[side]
        t = wrist.shape[0]
        with torch.no_grad():
            hand_pose = anatomical_to_hand_pose(model, torch.as_tensor(anat, dtype=torch.float32))
            pose = HandPose(matrix_to_axis_angle(torch.as_tensor(rotation, dtype=torch.float32)), hand_pose,
                            torch.as_tensor(np.tile(betas, (t, 1)), dtype=torch.float32),
                            torch.as_tensor(wrist, dtype=torch.float32))
            mesh = model(pose)
        return PosedHand(mesh.vertices.numpy(), mesh.joints.numpy(), rotation, wrist, hand_pose.numpy(),
                         np.asarray(betas, np.float32), side)


def _local_joints(rig: HandRig, side: str, anat: np.ndarray) -> np.ndarray:
    """Joints ``[21, 3]`` of the mean-shape hand with articulation ``anat [15, 3]`` in the model frame."""
    model = rig.models[side]
    with torch.no_grad():
        pose = HandPose.zeros(1, torch.float64)
        pose.hand_pose = anatomical_to_hand_pose(model, torch.as_tensor(anat[None], dtype=torch.float64))
        return model.joints_only(pose)[0].numpy()


def grip_point(rig: HandRig, side: str, anat: np.ndarray) -> np.ndarray:
    """Model-frame point ``[3]`` a grasp closes around: mean of the thumb, index and middle tips and the palm centre."""
    j = _local_joints(rig, side, anat)
    return (j[4] + j[8] + j[12] + j[[0, 5, 9, 13, 17]].mean(0)) / 4


def palm_point(rig: HandRig, side: str, anat: np.ndarray) -> np.ndarray:
    """Model-frame point ``[3]`` on the palm surface (palm centre 1.5 cm out along the palm normal)."""
    j = _local_joints(rig, side, anat)
    return j[[0, 5, 9, 13, 17]].mean(0) + 0.015 * rig.model_frames[side][:, 1]


def fingertip_point(rig: HandRig, side: str, anat: np.ndarray) -> np.ndarray:
    """Model-frame middle fingertip ``[3]`` (index tip when the hand points)."""
    j = _local_joints(rig, side, anat)
    return j[8] if anat[6, 0] > 1.0 and anat[3, 0] < 0.5 else j[12]
