"""Procedural tabletop scenes and egocentric head motion.

World frame (the "table frame"): metres, z up, the table top is the plane ``z = 0``, its near
edge (the viewer's side) at ``y = -0.35``, x to the viewer's right. Objects stand on the
table (their frame's origin is the centre of their base). The camera is an OpenCV camera
(x right, y down, z forward) whose pose is ``c2w``.

Design choices:
- Everything is drawn from one ``numpy.random.Generator``, so a clip is a pure function of
  ``(seed, index)``.
- A room (floor, three walls) around a table with legs, each surface with a procedural
  material (pattern + two colours, ``gl.PATTERNS``); 1-6 objects of five kinds with random
  size, colour and pattern, placed without overlap in the reachable middle of the table.
- The scene's own light (``light_dir``, ``light_color``, ``ambient``) is the style-1 light;
  ``synth`` lights clips with the ``look`` module's, drawn from a stream of its own.
- Head: an egocentric eye 22-36 cm above the table, 5-15 cm behind its near edge, looking down at
  the table centre, with a random horizontal field of view (55-75 degrees). Head motion is
  a smooth sum of slow sinusoids (0.15-0.7 Hz) in yaw, pitch, roll and translation; a share
  of clips (``still_prob``) keep the head still.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np
import torch

from hand2world.geometry import axis_angle_to_matrix, intrinsics_from_fov, look_at
from hand2world.world.gl import Material
from hand2world.world.meshes import MESH_KINDS, Mesh, make_mesh

__all__ = ["TABLE_NEAR_Y", "SceneObject", "Scene", "head_trajectory", "sample_scene"]

TABLE_NEAR_Y = -0.35
TABLE_SIZE = (1.2, 0.8)  # x, y extent
TABLE_THICKNESS = 0.04
FLOOR_Z = -0.75

# object kind -> (diameter or x range, y range (boxes), height range), metres
_SIZES = {
    "box": ((0.04, 0.14), (0.04, 0.14), (0.03, 0.24)),
    "cylinder": ((0.04, 0.1), None, (0.05, 0.25)),
    "sphere": ((0.04, 0.09), None, None),
    "cup": ((0.06, 0.09), None, (0.07, 0.12)),
    "bowl": ((0.10, 0.16), None, (0.04, 0.06)),
}


@dataclass
class SceneObject:
    """A rigid object: ``kind`` (``MESH_KINDS``), ``size`` (sx, sy, sz) m, ``material``, initial ``pose`` [4, 4]."""

    kind: str
    size: np.ndarray
    material: Material
    pose: np.ndarray

    @property
    def radius(self) -> float:
        """Footprint radius (m): half the diagonal for boxes, half the diameter otherwise."""
        if self.kind == "box":
            return float(np.hypot(self.size[0], self.size[1]) / 2)
        return float(self.size[0] / 2)

    @property
    def height(self) -> float:
        return float(self.size[2])

    def mesh(self) -> Mesh:
        return make_mesh(self.kind, self.size)

    @property
    def kind_id(self) -> int:
        return MESH_KINDS.index(self.kind)


@dataclass
class Scene:
    """A sampled scene: static surfaces (mesh, material, pose) with their roles, objects, light, camera base
    pose and ``K``."""

    surfaces: list[tuple[Mesh, Material, np.ndarray]]
    objects: list[SceneObject]
    light_dir: np.ndarray
    light_color: np.ndarray
    ambient: np.ndarray
    fov_deg: float
    eye: np.ndarray
    target: np.ndarray
    extra: dict = field(default_factory=dict)
    surface_roles: list[str] = field(default_factory=list)  # per surface: "table", "leg", "floor", "wall"

    def K(self, height: int, width: int) -> np.ndarray:
        """``[3, 3]`` intrinsics for an image of ``height x width`` pixels."""
        return intrinsics_from_fov(self.fov_deg, height, width, dtype=torch.float64).numpy()

    def base_c2w(self) -> np.ndarray:
        """``[4, 4]`` camera-to-world of the still head."""
        return look_at(torch.as_tensor(self.eye), torch.as_tensor(self.target),
                       torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).numpy()


def _color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val)))


def _material(rng: np.random.Generator, patterns: list[int], p: list[float], sat: tuple[float, float],
              val: tuple[float, float], scale: tuple[float, float], shine: float = 0.0) -> Material:
    a = _color(rng, sat, val)
    b = np.clip(a * rng.uniform(0.5, 0.85) if rng.random() < 0.6 else _color(rng, sat, val), 0, 1)
    return Material(tuple(a), tuple(b), int(rng.choice(patterns, p=p)), float(rng.uniform(*scale)), shine)


def _translate(x: float, y: float, z: float, yaw: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = (x, y, z)
    return T


def _slab(sx: float, sy: float, sz: float) -> Mesh:
    return make_mesh("box", np.array([sx, sy, sz]))


def sample_scene(rng: np.random.Generator, max_objects: int = 6) -> Scene:
    """Draw a scene (see module notes); 1 to ``max_objects`` objects."""
    surfaces: list[tuple[Mesh, Material, np.ndarray]] = []
    # table (top at z = 0) with legs; wood most often
    table_mat = _material(rng, [0, 1, 2, 3, 4], [0.15, 0.1, 0.15, 0.4, 0.2], (0.1, 0.7), (0.35, 0.95), (6, 30))
    tx, ty = TABLE_SIZE
    cy = TABLE_NEAR_Y + ty / 2
    surfaces.append((_slab(tx, ty, TABLE_THICKNESS), table_mat, _translate(0, cy, -TABLE_THICKNESS)))
    leg_mat = Material(tuple(np.array(table_mat.color_a) * 0.6))
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = _slab(0.05, 0.05, -FLOOR_Z - TABLE_THICKNESS)
            surfaces.append((leg, leg_mat, _translate(sx * (tx / 2 - 0.05), cy + sy * (ty / 2 - 0.05), FLOOR_Z)))
    # room: floor and three walls
    floor_mat = _material(rng, [0, 1, 3, 4, 5], [0.2, 0.2, 0.2, 0.2, 0.2], (0.0, 0.5), (0.2, 0.8), (2, 8))
    surfaces.append((_slab(6, 6, 0.02), floor_mat, _translate(0, 0, FLOOR_Z - 0.02)))
    wall_mat = _material(rng, [0, 2, 4, 5, 1], [0.35, 0.2, 0.25, 0.1, 0.1], (0.0, 0.45), (0.45, 0.95), (2, 12))
    back = rng.uniform(0.9, 1.8)
    surfaces.append((_slab(6, 0.02, 3.5), wall_mat, _translate(0, back, FLOOR_Z)))
    for sx in (-1, 1):
        surfaces.append((_slab(0.02, 6, 3.5), wall_mat, _translate(sx * rng.uniform(1.2, 2.2), 0, FLOOR_Z)))

    objects: list[SceneObject] = []
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(40 * n):
        if len(objects) == n:
            break
        kind = MESH_KINDS[int(rng.choice(len(MESH_KINDS), p=[0.3, 0.25, 0.15, 0.15, 0.15]))]
        dx, dy, dz = _SIZES[kind]
        d = rng.uniform(*dx)
        size = np.array([d, rng.uniform(*dy) if dy else d, rng.uniform(*dz) if dz else d])
        if kind in ("box", "cylinder") and rng.random() < 0.4:  # bottles, cartons: tall things hide hands
            size[2] = rng.uniform(0.14, dz[1])
        obj = SceneObject(kind, size, _material(rng, [0, 0, 2, 1, 4], [0.45, 0.15, 0.15, 0.1, 0.15], (0.35, 0.95),
                                                (0.35, 0.95), (30, 90), shine=float(rng.choice([0, 16, 48]))),
                          np.eye(4))
        x, y = rng.uniform(-0.26, 0.26), rng.uniform(-0.08, 0.25)
        if all(np.hypot(x - o.pose[0, 3], y - o.pose[1, 3]) > obj.radius + o.radius + 0.03 for o in objects):
            obj.pose = _translate(x, y, 0.0, rng.uniform(0, 2 * np.pi))
            objects.append(obj)

    elev, azim = np.deg2rad(rng.uniform(35, 80)), rng.uniform(0, 2 * np.pi)
    light_dir = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    warmth = rng.uniform(-1, 1)
    light_color = rng.uniform(0.55, 0.95) * np.array([1 + 0.12 * warmth, 1.0, 1 - 0.15 * warmth])
    ambient = rng.uniform(0.22, 0.45) * np.array([1 - 0.05 * warmth, 1.0, 1 + 0.08 * warmth])
    eye = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.5, -0.4), rng.uniform(0.22, 0.36)])
    target = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.02, 0.1), 0.0])
    roles = ["table", *["leg"] * 4, "floor", *["wall"] * 3]
    return Scene(surfaces, objects, light_dir, light_color, ambient, float(rng.uniform(55, 75)), eye, target,
                 surface_roles=roles)


def head_trajectory(rng: np.random.Generator, base_c2w: np.ndarray, frames: int, fps: float,
                    still_prob: float = 0.3) -> tuple[np.ndarray, bool]:
    """Per-frame camera poses for a clip.

    Args:
        base_c2w: ``[4, 4]`` the head's rest pose.
        frames, fps: clip length.
        still_prob: probability of a still head.

    Returns:
        ``(c2w [T, 4, 4], moving)``. Moving heads turn up to about 8 degrees (yaw), 6 (pitch),
        3 (roll) and move up to about 3 cm, smoothly (sums of two slow sinusoids per axis).
    """
    c2w = np.tile(base_c2w, (frames, 1, 1))
    if rng.random() < still_prob:
        return c2w, False
    t = np.arange(frames)[:, None] / fps
    amp = np.array([np.deg2rad(6), np.deg2rad(8), np.deg2rad(3), 0.025, 0.02, 0.02]) * rng.uniform(0.4, 1.0, 6)
    freq = rng.uniform(0.15, 0.7, (2, 6))
    phase = rng.uniform(0, 2 * np.pi, (2, 6))
    mix = rng.uniform(0.3, 0.7, 6)
    wave = mix * np.sin(2 * np.pi * freq[0] * t + phase[0]) + (1 - mix) * np.sin(2 * np.pi * freq[1] * t + phase[1])
    wave -= wave[:1]  # the clip starts at the rest pose
    offset = wave * amp  # [T, 6]: pitch (about camera x), yaw (camera y), roll (camera z), translation
    R = axis_angle_to_matrix(torch.as_tensor(offset[:, :3])).numpy()
    delta = np.tile(np.eye(4), (frames, 1, 1))
    delta[:, :3, :3] = R
    delta[:, :3, 3] = offset[:, 3:]
    return c2w @ delta, True
