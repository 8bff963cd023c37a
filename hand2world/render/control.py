"""The occlusion-invariant hand control image (Hand2World): filled mesh silhouette + wireframe.

Design choices:
- What is drawn: every triangle of every hand mesh, projected with ``K`` (camera coordinates,
  OpenCV convention), on black; nothing in the scene occludes the hand, so the control image
  shows the whole hand even where the generated video will hide it behind an object.
- Visibility: a true per-pixel z-buffer over all hands together (``raster.rasterize_triangles``),
  both faces of every triangle (no back-face culling, so open meshes such as MANO's wrist
  opening render without holes and face winding does not matter). Where two hands overlap
  the nearer surface wins at every pixel: stricter than drawing the farther hand (by mean
  depth) first, and identical to it whenever the hands do not interpenetrate.
- Near plane: triangles with any corner closer than ``NEAR`` (1 cm) are dropped (no clipping);
  a hand behind the camera draws nothing.
- Shading (on by default): each triangle's fill is scaled by ``SHADE_MIN + (1 - SHADE_MIN) |cos a|``,
  ``a`` the angle between the face normal and the viewing ray (a two-sided headlight). A subtle
  orientation cue for the model; ``shading=False`` gives the flat side colour.
- Lines (on by default), from the per-pixel triangle-index buffer rather than ``cv2.polylines``
  (which cost ~0.5 us per triangle and needs a separate visibility test), 1 px, in the side's
  wire colour:
  - contours: wherever a pixel's 4-neighbour is background, the other hand, or more than
    ``DEPTH_EDGE`` (1 cm) farther away, the nearer pixel is marked: the silhouette outline and
    occlusion edges (a finger crossing the palm), always drawn;
  - wireframe: boundaries between two visible triangles of the same surface, i.e. exactly the
    visible mesh edges (hidden edges never show through). Decided per hand, all or nothing: a
    hand is wired when the median projected area of its triangles is at least ``min_wire_area``
    px (default 4). Below that the mesh is denser than the pixel grid and a wireframe would
    paint the hand in the wire colour; a per-triangle threshold instead wires only the larger
    triangles (wrist, back of the hand) and leaves a speckle that depends on the mesh's
    tessellation, so a small hand degrades as a whole to shaded silhouette + contours. At
    544x384 (the paper's resolution) and for near hands at 256x256 hands are wired.
- Colours come from ``colors.SIDE_COLORS``; any resolution; inputs may be torch or NumPy.
- ``hand2world.hands`` is not imported: meshes only need ``.vertices``, ``.faces``, ``.side``
  (``MeshLike``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hand2world.render.colors import SHADE_MIN, side_colors
from hand2world.render.raster import rasterize_planar

__all__ = ["DEPTH_EDGE", "MeshLike", "NEAR", "as_numpy", "render_control"]

NEAR = 0.01  # metres: triangles with a corner nearer than this are dropped
DEPTH_EDGE = 0.01  # metres: a depth jump larger than this between neighbouring pixels is a contour


@runtime_checkable
class MeshLike(Protocol):
    """What ``render_control`` needs from a hand mesh (e.g. ``hand2world.hands.HandMesh``).

    ``vertices`` ``[1, V, 3]`` (or ``[V, 3]``) camera coordinates in metres, ``faces`` ``[F, 3]``
    integer indices, ``side`` "left" | "right". Torch tensors or NumPy arrays.
    """

    vertices: Any
    faces: Any
    side: str


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """Torch tensor (any device, with or without grad) or array-like -> NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _mesh_arrays(mesh: MeshLike) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices [V, 3] float64, faces [F, 3] int64)`` of a batch-1 (or unbatched) mesh."""
    verts = as_numpy(mesh.vertices, np.float64)
    if verts.ndim == 3:
        if verts.shape[0] != 1:
            raise ValueError(f"render_control draws one frame: expected batch-1 vertices, got {verts.shape}")
        verts = verts[0]
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"vertices must be [1, V, 3] or [V, 3], got {verts.shape}")
    faces = as_numpy(mesh.faces, np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {faces.shape}")
    return verts, faces


def render_control(
    meshes: Sequence[MeshLike],
    K: Any,
    height: int,
    width: int,
    *,
    shading: bool = True,
    wireframe: bool = True,
    min_wire_area: float = 4.0,
) -> np.ndarray:
    """Render the hand control image.

    Args:
        meshes: hand meshes (``MeshLike``), vertices in camera coordinates (metres); may be empty.
        K: ``[3, 3]`` intrinsics in pixels of the output resolution (torch or NumPy).
        height, width: output size in pixels.
        shading: scale each triangle's fill by its two-sided headlight term (see module notes).
        wireframe: draw contours and the visible mesh edges in the side's wire colour.
        min_wire_area: a hand is wired when the median projected area of its triangles is at least
            this many px; 0 always wires (contours are drawn regardless).

    Returns:
        ``uint8 [H, W, 3]`` RGB image; all zeros when there is nothing in front of the camera.
    """
    image = np.zeros((height, width, 3), dtype=np.uint8)
    K = as_numpy(K, np.float64).reshape(3, 3)
    xs, ys, izs, color_parts, sizes, wires = [], [], [], [], [], []
    for mesh in meshes:
        colors = side_colors(mesh.side)
        verts, faces = _mesh_arrays(mesh)
        z = verts[:, 2]
        if faces.shape[0] and z.min() < NEAR:
            ok = z >= NEAR
            faces = faces[ok[faces[:, 0]] & ok[faces[:, 1]] & ok[faces[:, 2]]]
        if faces.shape[0] == 0:
            continue
        # Planar layout: per-vertex rows gathered by faces.T give contiguous [3, F] corner arrays.
        inv_z = 1.0 / np.maximum(z, NEAR)
        pts = np.ascontiguousarray(verts.T)  # [3, V]
        u = (K[0, 0] * pts[0] + K[0, 1] * pts[1] + K[0, 2] * pts[2]) * inv_z  # no BLAS: one thread
        v = (K[1, 0] * pts[0] + K[1, 1] * pts[1] + K[1, 2] * pts[2]) * inv_z
        ft = np.ascontiguousarray(faces.T)
        xs.append(u[ft])
        ys.append(v[ft])
        izs.append(inv_z[ft])
        fill = np.asarray(colors.fill, dtype=np.float64)
        if shading:
            cx, cy, cz = pts[0][ft], pts[1][ft], pts[2][ft]  # each [3, F]
            e1 = (cx[1] - cx[0], cy[1] - cy[0], cz[1] - cz[0])
            e2 = (cx[2] - cx[0], cy[2] - cy[0], cz[2] - cz[0])
            nx = e1[1] * e2[2] - e1[2] * e2[1]
            ny = e1[2] * e2[0] - e1[0] * e2[2]
            nz = e1[0] * e2[1] - e1[1] * e2[0]
            vx, vy, vz = cx.sum(axis=0), cy.sum(axis=0), cz.sum(axis=0)  # toward the centroid
            dot = np.abs(nx * vx + ny * vy + nz * vz)
            norm = np.sqrt((nx * nx + ny * ny + nz * nz) * (vx * vx + vy * vy + vz * vz)) + 1e-30
            shade = SHADE_MIN + (1.0 - SHADE_MIN) * (dot / norm)
            color_parts.append(np.rint(shade[:, None] * fill).astype(np.uint8))
        else:
            color_parts.append(np.broadcast_to(fill.astype(np.uint8), (faces.shape[0], 3)))
        sizes.append(faces.shape[0])
        wires.append(colors.wire)
    if not sizes:
        return image

    x, y = np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)
    tri_index, inv_depth = rasterize_planar(x, y, np.concatenate(izs, axis=1), height, width)
    flat = tri_index.reshape(-1)
    covered = np.flatnonzero(flat >= 0)
    won = flat[covered]
    image.reshape(-1, 3)[covered] = np.concatenate(color_parts)[won]
    if wireframe:
        area = 0.5 * np.abs((x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0]))
        hand_of_face = np.repeat(np.arange(1, len(sizes) + 1, dtype=np.int32), sizes)
        bounds = np.cumsum([0, *sizes])
        wired_hand = [np.median(area[a:b]) >= min_wire_area for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        _draw_lines(image, tri_index, inv_depth, hand_of_face, np.repeat(wired_hand, sizes), wires)
    return image


def _draw_lines(
    image: np.ndarray,
    tri_index: np.ndarray,
    inv_depth: np.ndarray,
    hand_of_face: np.ndarray,
    wired: np.ndarray,
    wires: list[tuple[int, int, int]],
) -> None:
    """Draw contours and the visible wireframe from the triangle-index buffer (in place).

    For every pair of 4-adjacent pixels: across a contour (background, another hand, or a depth
    jump over ``DEPTH_EDGE``) the nearer pixel is marked; between two different triangles of
    the same surface the pixel of the first one is marked when its hand is ``wired``. Marked
    pixels take their hand's wire colour.

    Args:
        image: ``[H, W, 3]`` uint8, modified in place.
        tri_index: ``[H, W]`` visible triangle (-1: none); inv_depth: ``[H, W]`` its ``1/z`` (0: none).
        hand_of_face: ``[F]`` 1-based hand of each triangle; wired: ``[F]`` bool, draw its edges.
        wires: wire colour of each hand (1-based ``hand_of_face`` indexes it from 1).
    """
    rows = np.flatnonzero((tri_index >= 0).any(axis=1))
    cols = np.flatnonzero((tri_index >= 0).any(axis=0))
    if rows.size == 0:
        return
    # Work on the covered bounding box grown by one pixel (contours sit on covered pixels).
    box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
    tri, iz = tri_index[box], inv_depth[box]
    covered = tri >= 0
    hand = np.append(hand_of_face, 0).astype(np.uint8)[tri]  # index -1 -> 0: background
    big = np.append(wired, False)[tri]
    mark = np.zeros(tri.shape, dtype=bool)
    for axis in (0, 1):
        n = tri.shape[axis] - 1
        a = (slice(0, n), slice(None)) if axis == 0 else (slice(None), slice(0, n))
        b = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        ia, ib = iz[a], iz[b]
        # |1/ia - 1/ib| > DEPTH_EDGE  <=>  |ib - ia| > DEPTH_EDGE * ia * ib (background: 1/z = 0).
        contour = (hand[a] != hand[b]) | (np.abs(ib - ia) > DEPTH_EDGE * ia * ib)
        a_near = ia >= ib
        mark[a] |= contour & a_near & covered[a]
        mark[b] |= contour & ~a_near & covered[b]
        mark[a] |= ~contour & (tri[a] != tri[b]) & big[a]
    lut = np.array([(0, 0, 0), *wires], dtype=np.uint8)
    image[box][mark] = lut[hand[mark]]


def mask_control(mask: np.ndarray) -> np.ndarray:
    """A 2-D hand mask as a control image (the ablation's conditioning): white hands on black.

    Args:
        mask: bool (or 0/1) ``[..., H, W]``.

    Returns:
        uint8 ``[..., H, W, 3]``.
    """
    m = np.asarray(mask).astype(bool)
    return np.repeat((m * np.uint8(255))[..., None], 3, axis=-1)


def control_silhouette(control: np.ndarray, threshold: int = 8) -> np.ndarray:
    """The full-hand mask of control renders (any channel above ``threshold``), as a control image.

    A mask-conditioned model gets this at inference: the rendered mesh's silhouette is the full
    hand (occlusion ignored), which is what free-space gestures give.

    Args:
        control: uint8 ``[..., H, W, 3]``.

    Returns:
        uint8 ``[..., H, W, 3]`` (255 inside the silhouette, 0 outside).
    """
    return mask_control(np.asarray(control).max(axis=-1) > threshold)
