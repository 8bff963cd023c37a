"""Tests of hand2world.render: rasteriser, control image, landmark overlay, benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import hand2world.render.raster as raster
from hand2world.render import (
    SHADE_MIN,
    SIDE_COLORS,
    rasterize_triangles,
    render_control,
    render_landmarks,
)
from hand2world.render.bench import bench_render
from hand2world.render.synthetic import synthetic_hand_mesh, two_hand_scene, uv_sphere


@dataclass
class Mesh:
    vertices: object
    faces: object
    side: str


def camera(height: int, width: int, fov_deg: float = 60.0) -> np.ndarray:
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    p = points @ K.T
    return p[..., :2] / p[..., 2:]


def nonblack(image: np.ndarray) -> np.ndarray:
    return image.max(axis=-1) > 0


def brute_force_cover(uv: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W] bool: pixel centres inside any of the triangles uv [F, 3, 2] (reference)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    out = np.zeros((height, width), dtype=bool)
    for a, b, c in uv:
        def side(p, q):
            return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])
        s1, s2, s3 = side(a, b), side(b, c), side(c, a)
        out |= ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))
    return out


# ----------------------------------------------------------------------------- rasteriser


def test_raster_matches_brute_force_union_of_overlapping_triangles():
    rng = np.random.default_rng(0)
    H, W = 48, 64
    # Many overlapping triangles: cv2.fillPoly's even-odd rule would leave the overlaps empty.
    uv = rng.uniform([-10, -10], [W + 10, H + 10], size=(40, 3, 2))
    iz = rng.uniform(0.5, 2.0, size=(40, 3))
    tri, inv = rasterize_triangles(uv, iz, H, W)
    expected = brute_force_cover(uv, H, W)
    np.testing.assert_array_equal(tri >= 0, expected)
    assert (inv[expected] > 0).all() and (inv[~expected] == 0).all()


def test_raster_depth_test_and_perspective_correct_depth():
    H, W = 40, 40
    K = camera(H, W, 70.0)
    # The tilted plane z = 1 + 0.5 X (camera space) as two triangles, and a small triangle in front.
    # Along the ray (r, s, 1) the plane is at z = 1 / (1 - 0.5 r).
    rays = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    z = 1.0 / (1.0 - 0.5 * rays[:, :1])
    pts = np.concatenate([rays * z, z], axis=1)
    front = np.array([[-0.05, -0.05, 0.5], [0.05, -0.05, 0.5], [0.0, 0.06, 0.5]])
    verts = np.concatenate([pts, front])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    uv, iz = project(verts, K)[faces], 1.0 / verts[faces][..., 2]
    tri, inv = rasterize_triangles(uv, iz, H, W)
    assert tri[H // 2, W // 2] == 2  # the near triangle wins where it overlaps the plane
    # Elsewhere, 1/z equals that of the plane along each pixel's ray: 1/z = 1 - 0.5 r.
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    x_over_z = (xs - K[0, 2]) / K[0, 0]
    on_plane = (tri >= 0) & (tri < 2)
    np.testing.assert_allclose(inv[on_plane], (1.0 - 0.5 * x_over_z)[on_plane], rtol=1e-5)
    # Drawing order does not matter (up to ties on the plane's own diagonal).
    tri2, inv2 = rasterize_triangles(uv[::-1], iz[::-1], H, W)
    np.testing.assert_array_equal(tri2 == 0, tri == 2)
    np.testing.assert_array_equal(tri2 >= 0, tri >= 0)
    np.testing.assert_array_equal(inv2, inv)


def test_raster_area_of_one_big_triangle():
    H, W = 300, 400
    uv = np.array([[[20.3, 30.7], [380.1, 50.2], [120.6, 290.4]]])
    tri, _ = rasterize_triangles(uv, np.ones((1, 3)), H, W)
    a, b, c = uv[0]
    area = 0.5 * abs((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    assert abs((tri == 0).sum() - area) < 0.01 * area
    np.testing.assert_array_equal(tri == 0, brute_force_cover(uv, H, W))


def test_raster_chunking_gives_identical_result(monkeypatch):
    hands = two_hand_scene()
    K = camera(96, 128)
    full = render_control(hands, K, 96, 128)
    monkeypatch.setattr(raster, "_CHUNK_PIXELS", 64)
    np.testing.assert_array_equal(render_control(hands, K, 96, 128), full)


def test_raster_no_cracks_on_shared_edges():
    # A square split along its diagonal, with the diagonal through pixel centres exactly.
    uv = np.array([[[0.0, 0.0], [32.0, 0.0], [32.0, 32.0]], [[0.0, 0.0], [32.0, 32.0], [0.0, 32.0]]])
    tri, _ = rasterize_triangles(uv, np.ones((2, 3)), 32, 32)
    assert (tri >= 0).all()


# ----------------------------------------------------------------------------- control render


def test_no_hands_is_black():
    image = render_control([], camera(48, 64), 48, 64)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and not image.any()


def test_silhouette_covers_projected_triangles_and_joints():
    H, W = 384, 544
    K = camera(H, W)
    hand = synthetic_hand_mesh("right", translation=(0.0, 0.0, 0.35))
    image = render_control([hand], K, H, W)
    mask = nonblack(image)
    verts = hand.vertices[0]
    uv = project(verts, K)[hand.faces]  # [F, 3, 2]
    centroid = uv.mean(axis=1)
    # Inradius > 0.75 px: the centre of the pixel holding the centroid lies inside the triangle.
    a, b, c = (np.linalg.norm(uv[:, i] - uv[:, j], axis=1) for i, j in ((1, 2), (2, 0), (0, 1)))
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    inradius = 2 * area / (a + b + c)
    big = inradius > 0.75
    assert big.sum() > 100
    px = np.floor(centroid[big]).astype(int)
    assert mask[px[:, 1], px[:, 0]].all()
    joints = np.floor(project(hand.joints[0], K)).astype(int)
    assert mask[joints[:, 1], joints[:, 0]].all()
    # And nothing is drawn far from the mesh: every covered pixel is near some projected vertex.
    uv_v = project(verts, K)
    ys, xs = np.nonzero(mask)
    sample = np.stack([xs, ys], axis=1)[:: max(1, len(xs) // 500)] + 0.5
    dist = np.linalg.norm(sample[:, None] - uv_v[None], axis=-1).min(axis=1)
    assert dist.max() < 8.0


def test_side_colours_are_the_configured_ones_and_differ():
    H, W = 96, 128
    K = camera(H, W)
    left, right = SIDE_COLORS["left"], SIDE_COLORS["right"]
    assert left.fill != right.fill and left.wire != right.wire
    for side, colors in (("left", left), ("right", right)):
        hand = synthetic_hand_mesh(side)
        flat = render_control([hand], K, H, W, shading=False, wireframe=False)
        found = {tuple(c) for c in flat.reshape(-1, 3)} - {(0, 0, 0)}
        assert found == {colors.fill}
        shaded = render_control([hand], K, H, W)
        pix = shaded[nonblack(shaded)].astype(np.float64)
        is_wire = (pix == colors.wire).all(axis=1)
        assert 0 < is_wire.sum() < 0.7 * len(pix)
        # Every other pixel is the fill scaled by a shading factor in [SHADE_MIN, 1].
        fill = np.array(colors.fill, dtype=np.float64)
        k = fill.argmax()
        factor = pix[~is_wire, k] / fill[k]
        assert factor.min() >= SHADE_MIN - 0.01 and factor.max() <= 1.0
        np.testing.assert_allclose(pix[~is_wire], factor[:, None] * fill, atol=1.0)
        assert len(np.unique(factor.round(2))) > 5  # shading varies over the surface


def test_any_resolution():
    hand = synthetic_hand_mesh("left")
    for H, W in ((48, 64), (384, 544), (31, 17)):
        image = render_control([hand], camera(H, W), H, W)
        assert image.shape == (H, W, 3)
        assert nonblack(image).any()
    # Covered fraction is resolution independent (same field of view).
    small = nonblack(render_control([hand], camera(96, 128), 96, 128)).mean()
    large = nonblack(render_control([hand], camera(384, 512), 384, 512)).mean()
    assert abs(small - large) < 0.1 * large


def test_hand_behind_the_camera_draws_nothing():
    K = camera(64, 64)
    # Centred and offset (a wrong near-plane test could land these on screen, mirrored or scaled).
    for x in np.linspace(-0.4, 0.4, 9):
        behind = synthetic_hand_mesh("right", translation=(x, x, -0.4))
        assert not render_control([behind], K, 64, 64).any()
    # Straddling the near plane: the triangles in front still render, nothing crashes.
    straddle = synthetic_hand_mesh("right", translation=(0.0, 0.0, 0.01))
    image = render_control([straddle], K, 64, 64)
    assert image.shape == (64, 64, 3)
    z = straddle.vertices[0, :, 2]
    assert (z < 0.01).any() and (z >= 0.01).any()


@pytest.mark.parametrize("swap_list", [False, True])
def test_nearer_hand_on_top(swap_list):
    H, W = 64, 64
    K = camera(H, W)
    for near_side, far_side in (("right", "left"), ("left", "right")):
        near = synthetic_hand_mesh(near_side, translation=(0.0, 0.0, 0.3))
        far = synthetic_hand_mesh(far_side, translation=(0.01, 0.0, 0.5))
        meshes = [near, far] if swap_list else [far, near]
        image = render_control(meshes, K, H, W, shading=False, wireframe=False)
        assert tuple(image[H // 2, W // 2]) == SIDE_COLORS[near_side].fill
        # The far hand is still visible where the near one does not cover it.
        assert (image == SIDE_COLORS[far_side].fill).all(axis=-1).any()


def test_wire_stays_inside_its_hand_and_torch_input_matches_numpy():
    H, W = 96, 128
    K = camera(H, W)
    hands = two_hand_scene()
    ref = render_control(hands, K, H, W)
    torch_hands = [Mesh(torch.from_numpy(h.vertices).float(), torch.from_numpy(h.faces), h.side)
                   for h in hands]
    got = render_control(torch_hands, torch.from_numpy(K), H, W)
    assert (got != ref).any(axis=-1).mean() < 0.01  # float32 vs float64 vertices
    silhouette = nonblack(render_control(hands, K, H, W, wireframe=False))
    np.testing.assert_array_equal(nonblack(ref), silhouette)


def test_rejects_batched_meshes_and_unknown_sides():
    hand = synthetic_hand_mesh("right")
    two = Mesh(np.concatenate([hand.vertices, hand.vertices]), hand.faces, "right")
    with pytest.raises(ValueError, match="batch-1"):
        render_control([two], camera(32, 32), 32, 32)
    with pytest.raises(ValueError, match="side"):
        render_control([Mesh(hand.vertices, hand.faces, "middle")], camera(32, 32), 32, 32)


def test_synthetic_meshes_are_closed_and_outward():
    v, f = uv_sphere()
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((n * v[f].mean(axis=1)).sum(axis=1) > 0).all()
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()
    hand = synthetic_hand_mesh("left")
    assert 1400 <= hand.vertices.shape[1] <= 1800 and 2800 <= hand.faces.shape[0] <= 3400


# ----------------------------------------------------------------------------- landmarks


def test_render_landmarks_draws_side_colours_without_touching_input():
    H, W = 120, 160
    rgb = np.full((H, W, 3), 128, dtype=np.uint8)
    before = rgb.copy()
    rng = np.random.default_rng(1)
    pts = rng.uniform(0.2, 0.8, size=(2, 21, 3))
    pts[1, 5] = np.nan  # a missing joint is skipped
    out = render_landmarks(rgb, pts, ["left", "right"], normalized=True)
    np.testing.assert_array_equal(rgb, before)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    for side in ("left", "right"):
        c = SIDE_COLORS[side]
        for colour in (c.fill, c.joint):
            assert (out == colour).all(axis=-1).any()
    # Joints land where the points are (pixels = normalised * size).
    x, y = (pts[0, 0, :2] * [W, H]).astype(int)
    assert (out[y, x] != 128).any()
    assert not (render_landmarks(rgb, [], []) != rgb).any()
    with pytest.raises(ValueError):
        render_landmarks(rgb, pts, ["left"])


# ----------------------------------------------------------------------------- benchmark


def test_bench_render_reports_timings():
    result = bench_render(size=64, hands=2, iters=3, warmup=1, prefer_open=False)
    assert result["mesh"] == "synthetic" and result["hands"] == 2
    assert 0 < result["median_ms"] <= result["p95_ms"] * 1.0001
    assert result["covered_px"] > 0
