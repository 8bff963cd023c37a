"""Procedural meshes of the tabletop world: boxes, cylinders, spheres, cups, bowls, and vertex normals.

Design choices:
- Every mesh is ``(vertices [V, 3], normals [V, 3], faces [F, 3])`` float32/int32 in the object's
  own frame with its base on ``z = 0`` (objects rest on the table by placing the frame on it)
  and z up. Normals are per vertex; flat faces (box sides, cylinder caps) get their own
  vertices so edges stay sharp. Winding is irrelevant: the renderer shades both sides.
- Cups and bowls are thin shells with an inner surface, a rim and (cups) a bottom, so a hand
  reaching into them is occluded by the near wall like a real one.
- The sphere reuses ``render.synthetic.uv_sphere``.
- ``vertex_normals`` is batched over frames (``[T, V, 3]``): the hands' normals are recomputed
  for a whole clip in one NumPy pass.
"""

from __future__ import annotations

import numpy as np

from hand2world.render.synthetic import uv_sphere

__all__ = ["MESH_KINDS", "Mesh", "forearm_mesh", "make_mesh", "vertex_normals"]

Mesh = tuple[np.ndarray, np.ndarray, np.ndarray]

#: object kinds, in the order of their id (``object_info[:, 0]``)
MESH_KINDS: tuple[str, ...] = ("box", "cylinder", "sphere", "cup", "bowl")


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals.

    Args:
        vertices: ``[..., V, 3]``; faces: ``[F, 3]``.

    Returns:
        ``[..., V, 3]`` float32.
    """
    v = np.asarray(vertices, dtype=np.float32)
    shape = v.shape
    n_v = shape[-2]
    v = v.reshape(-1, n_v, 3)
    batch = v.shape[0]
    a, b, c = v[:, faces[:, 0]], v[:, faces[:, 1]], v[:, faces[:, 2]]
    fn = np.cross(b - a, c - a)  # [B, F, 3], length = 2 * area
    idx = (faces[None].astype(np.int64) + (np.arange(batch) * n_v)[:, None, None]).ravel()  # [B * F * 3]
    n = np.empty((batch * n_v, 3), dtype=np.float32)
    for d in range(3):  # one bincount per component (np.add.at is ~10x slower)
        weights = np.repeat(fn[..., d], 3, axis=-1).ravel()  # each face's normal to its 3 corners
        n[:, d] = np.bincount(idx, weights=weights, minlength=batch * n_v)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return n.reshape(shape)


def _merge(parts: list[Mesh]) -> Mesh:
    verts, norms, faces, offset = [], [], [], 0
    for v, n, f in parts:
        verts.append(v)
        norms.append(n)
        faces.append(f + offset)
        offset += len(v)
    return (np.concatenate(verts).astype(np.float32), np.concatenate(norms).astype(np.float32),
            np.concatenate(faces).astype(np.int32))


def _box(sx: float, sy: float, sz: float) -> Mesh:
    parts = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, w = [a for a in range(3) if a != axis]
            corners = np.zeros((4, 3))
            corners[:, axis] = sign
            corners[:, u] = [-1, 1, 1, -1]
            corners[:, w] = [-1, -1, 1, 1]
            n = np.zeros((4, 3))
            n[:, axis] = sign
            parts.append((corners, n, np.array([[0, 1, 2], [0, 2, 3]])))
    v, n, f = _merge(parts)
    v = (v * 0.5 + [0, 0, 0.5]) * np.array([sx, sy, sz], dtype=np.float32)
    return v.astype(np.float32), n, f


def _ring(radius: float, z: float, segments: int) -> np.ndarray:
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    return np.stack([radius * np.cos(phi), radius * np.sin(phi), np.full(segments, z)], axis=1)


def _strip(r0: np.ndarray, r1: np.ndarray, n0: np.ndarray, n1: np.ndarray) -> Mesh:
    """Quad strip between two closed rings of equal size."""
    s = len(r0)
    j = np.arange(s)
    jn = (j + 1) % s
    faces = np.concatenate([np.stack([j, jn, s + j], 1), np.stack([jn, s + jn, s + j], 1)])
    return np.concatenate([r0, r1]), np.concatenate([n0, n1]), faces


def _disc(radius: float, z: float, segments: int, up: bool) -> Mesh:
    rim = _ring(radius, z, segments)
    v = np.concatenate([[[0.0, 0.0, z]], rim])
    n = np.tile([0.0, 0.0, 1.0 if up else -1.0], (segments + 1, 1))
    j = np.arange(segments)
    return v, n, np.stack([np.zeros(segments, int), 1 + j, 1 + (j + 1) % segments], 1)


def _side(radius: float, z0: float, z1: float, segments: int, inward: bool = False) -> Mesh:
    r0, r1 = _ring(radius, z0, segments), _ring(radius, z1, segments)
    n = r0 * [1, 1, 0] / radius * (-1.0 if inward else 1.0)
    return _strip(r0, r1, n, n)


def _cylinder(radius: float, height: float, segments: int = 20) -> Mesh:
    return _merge([_side(radius, 0.0, height, segments), _disc(radius, height, segments, True),
                   _disc(radius, 0.0, segments, False)])


def _cup(radius: float, height: float, wall: float = 0.006, segments: int = 20) -> Mesh:
    inner = radius - wall
    rim0, rim1 = _ring(inner, height, segments), _ring(radius, height, segments)
    up = np.tile([0.0, 0.0, 1.0], (segments, 1))
    return _merge([_side(radius, 0.0, height, segments), _side(inner, wall, height, segments, inward=True),
                   _strip(rim0, rim1, up, up), _disc(inner, wall, segments, True), _disc(radius, 0.0, segments, False)])


def _bowl(radius: float, height: float, wall: float = 0.006, rings: int = 6, segments: int = 20) -> Mesh:
    """A spherical-cap shell of rim ``radius`` and depth ``height`` (flat foot at ``z = 0``)."""
    parts = []
    theta = np.linspace(0.15, np.pi / 2, rings + 1)  # from near the bottom to the rim
    for surface, r_scale in (("outer", 1.0), ("inner", (radius - wall) / radius)):
        rings_v, rings_n = [], []
        for t in theta:
            rr = radius * r_scale * np.sin(t)
            z = height * (1.0 - np.cos(t)) + (wall if surface == "inner" else 0.0)
            ring = _ring(rr, z, segments)
            normal = np.concatenate([ring[:, :2] / max(rr, 1e-6) * np.sin(t), np.full((segments, 1), -np.cos(t))], 1)
            rings_v.append(ring)
            rings_n.append(normal if surface == "outer" else -normal)
        for k in range(rings):
            parts.append(_strip(rings_v[k], rings_v[k + 1], rings_n[k], rings_n[k + 1]))
        bottom_r = radius * r_scale * np.sin(theta[0])
        bottom_z = height * (1.0 - np.cos(theta[0])) + (wall if surface == "inner" else 0.0)
        parts.append(_disc(bottom_r, bottom_z, segments, surface == "inner"))
    up = np.tile([0.0, 0.0, 1.0], (segments, 1))
    parts.append(_strip(_ring(radius - wall, height + wall, segments), _ring(radius, height, segments), up, up))
    v, n, f = _merge(parts)
    v[:, 2] -= v[:, 2].min()
    return v, n, f


def forearm_mesh(half_width: float, half_thickness: float, length: float, taper: float = 1.3,
                 segments: int = 20, rings: int = 6) -> Mesh:
    """An open tube of elliptical cross-section along ``+z`` from ``z = 0`` to ``length``: a forearm.

    The section's semi-axes are ``half_width`` (x) and ``half_thickness`` (y) at ``z = 0``, growing
    linearly to ``taper`` times that at the far end. The ends are open: the near end sits inside the
    hand's wrist, the far end beyond the camera's view.
    """
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    parts = []
    ring_v, ring_n = [], []
    for z in np.linspace(0.0, length, rings + 1):
        k = 1.0 + (taper - 1.0) * z / length
        a, b = half_width * k, half_thickness * k
        ring_v.append(np.stack([a * np.cos(phi), b * np.sin(phi), np.full(segments, z)], axis=1))
        n = np.stack([np.cos(phi) / a, np.sin(phi) / b, np.zeros(segments)], axis=1)
        ring_n.append(n / np.linalg.norm(n, axis=1, keepdims=True))
    for k in range(rings):
        parts.append(_strip(ring_v[k], ring_v[k + 1], ring_n[k], ring_n[k + 1]))
    return _merge(parts)


def make_mesh(kind: str, size: np.ndarray) -> Mesh:
    """Mesh of an object of ``kind`` (``MESH_KINDS``) with extent ``size = (sx, sy, sz)`` metres.

    Round kinds use ``sx`` as diameter (``sy`` is ignored); the base sits on ``z = 0``.

    Returns:
        ``(vertices [V, 3] float32, normals [V, 3] float32, faces [F, 3] int32)``.
    """
    sx, sy, sz = (float(s) for s in size)
    if kind == "box":
        return _box(sx, sy, sz)
    if kind == "cylinder":
        return _cylinder(sx / 2, sz)
    if kind == "sphere":
        v, f = uv_sphere(10, 16)
        return ((v * [sx / 2, sx / 2, sz / 2] + [0, 0, sz / 2]).astype(np.float32), v.astype(np.float32),
                f.astype(np.int32))
    if kind == "cup":
        return _cup(sx / 2, sz)
    if kind == "bowl":
        return _bowl(sx / 2, sz)
    raise ValueError(f"unknown object kind {kind!r}; known: {MESH_KINDS}")
