"""Property tests of hand2world.geometry (cameras, Plücker rays, rotations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hand2world.geometry import (
    axis_angle_to_matrix,
    backproject,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    make_rigid,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    matrix_to_rotation_9d,
    plucker_rays,
    plucker_to_rgb,
    project,
    quaternion_to_matrix,
    relative_c2w,
    rotation_6d_to_matrix,
    rotation_9d_to_matrix,
    scale_intrinsics,
    transform_points,
)

H, W = 24, 32
DT = torch.float64


def random_rotation(gen: torch.Generator, *batch: int) -> torch.Tensor:
    q = torch.randn(*batch, 4, generator=gen, dtype=DT)
    return quaternion_to_matrix(q)


def random_c2w(gen: torch.Generator, *batch: int) -> torch.Tensor:
    return make_rigid(random_rotation(gen, *batch), torch.randn(*batch, 3, generator=gen, dtype=DT))


def skewed_K() -> torch.Tensor:
    """Non-trivial intrinsics: fx != fy, off-centre principal point, a little skew."""
    return torch.tensor([[40.0, 0.3, 14.5], [0.0, 37.0, 13.0], [0.0, 0.0, 1.0]], dtype=DT)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ----------------------------------------------------------------------------- Plücker rays


def test_plucker_shape_unit_directions_and_orthogonal_moments(gen):
    rays = plucker_rays(skewed_K(), random_c2w(gen), H, W)
    assert rays.shape == (6, H, W) and rays.dtype == DT
    d, m = rays[:3], rays[3:]
    torch.testing.assert_close(d.norm(dim=0), torch.ones(H, W, dtype=DT))
    assert (d * m).sum(dim=0).abs().max() < 1e-12
    assert m.norm(dim=0).max() > 0.1  # a camera away from the origin has non-zero moments


def test_principal_point_ray_is_the_optical_axis(gen):
    c2w = random_c2w(gen)
    K = intrinsics_from_fov(60.0, H, W, dtype=DT)  # principal point (W/2, H/2): a pixel corner
    K[0, 2], K[1, 2] = 10.5, 7.5  # move it onto the centre of pixel (10, 7)
    rays = plucker_rays(K, c2w, H, W)
    z_axis, centre = c2w[:3, 2], c2w[:3, 3]
    torch.testing.assert_close(rays[:3, 7, 10], z_axis)
    torch.testing.assert_close(rays[3:, 7, 10], torch.linalg.cross(centre, z_axis))
    # The neighbouring pixel is not on the axis.
    assert (rays[:3, 7, 11] - z_axis).norm() > 1e-3


def test_directions_match_backprojected_pixel_centres(gen):
    K, c2w = skewed_K(), random_c2w(gen)
    rays = plucker_rays(K, c2w, H, W)
    uv = torch.tensor([[0.5, 0.5], [W - 0.5, H - 0.5], [3.5, 17.5]], dtype=DT)
    pts = transform_points(c2w, backproject(uv, torch.ones(3, dtype=DT), K)) - c2w[:3, 3]
    expected = pts / pts.norm(dim=-1, keepdim=True)
    got = torch.stack([rays[:3, 0, 0], rays[:3, H - 1, W - 1], rays[:3, 17, 3]])
    torch.testing.assert_close(got, expected)


def test_translation_changes_only_moments_by_t_cross_d(gen):
    K, c2w = skewed_K(), random_c2w(gen)
    t = torch.tensor([0.3, -0.2, 0.5], dtype=DT)
    moved = c2w.clone()
    moved[:3, 3] += t
    a, b = plucker_rays(K, c2w, H, W), plucker_rays(K, moved, H, W)
    torch.testing.assert_close(b[:3], a[:3])
    expected = torch.linalg.cross(t[:, None, None].expand(3, H, W), a[:3], dim=0)
    torch.testing.assert_close(b[3:] - a[3:], expected)


def test_rotation_equivariance(gen):
    K, c2w = skewed_K(), random_c2w(gen)
    R = random_rotation(gen)
    rotated = make_rigid(torch.eye(3, dtype=DT), torch.zeros(3, dtype=DT))
    rotated[:3, :3] = R
    a = plucker_rays(K, c2w, H, W)
    b = plucker_rays(K, rotated @ c2w, H, W)  # camera and its centre rotated by R about the origin
    torch.testing.assert_close(b[:3], torch.einsum("ij,jhw->ihw", R, a[:3]))
    torch.testing.assert_close(b[3:], torch.einsum("ij,jhw->ihw", R, a[3:]))


def test_batching_over_leading_dims_equals_per_item(gen):
    c2w = random_c2w(gen, 2, 3)
    K = skewed_K().expand(2, 1, 3, 3) * torch.tensor([1.0, 1.2], dtype=DT)[:, None, None, None]
    K[..., 2, 2] = 1.0
    rays = plucker_rays(K, c2w, H, W)
    assert rays.shape == (2, 3, 6, H, W)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(rays[i, j], plucker_rays(K[i, 0], c2w[i, j], H, W))


def test_numpy_input_and_float32(gen):
    K = intrinsics_from_fov(70.0, H, W)
    assert K.dtype == torch.float32
    rays = plucker_rays(K.numpy(), np.eye(4, dtype=np.float32), H, W)
    assert rays.dtype == torch.float32 and rays.shape == (6, H, W)
    assert rays[3:].abs().max() == 0  # camera at the origin: zero moments


def test_plucker_to_rgb_encodes_direction_and_moment(gen):
    K = intrinsics_from_fov(60.0, H, W)
    at_origin = plucker_rays(K, torch.eye(4), H, W)
    img = plucker_to_rgb(at_origin)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    # x grows to the right -> red grows to the right; y grows downwards -> green grows down.
    assert img[H // 2, -1, 0] > img[H // 2, 0, 0] + 50
    assert img[-1, W // 2, 1] > img[0, W // 2, 1] + 50
    moved = torch.eye(4)
    moved[:3, 3] = torch.tensor([0.0, 0.0, -0.5])
    dark = plucker_to_rgb(plucker_rays(K, moved, H, W))
    # Moments grow away from the optical axis: the centre keeps its colour, corners darken.
    def brightness(a, i, j):
        return float(a[i, j].astype(np.float64).sum())

    assert brightness(dark, H // 2, W // 2) > 0.95 * brightness(img, H // 2, W // 2)
    assert brightness(dark, 0, 0) < 0.8 * brightness(img, 0, 0)
    assert plucker_to_rgb(torch.stack([at_origin, at_origin])).shape == (2, H, W, 3)


# ----------------------------------------------------------------------------- poses


def test_relative_c2w_first_identity_and_world_invariance(gen):
    clip = random_c2w(gen, 5)
    rel = relative_c2w(clip)
    torch.testing.assert_close(rel[0], torch.eye(4, dtype=DT))
    G = random_c2w(gen)
    torch.testing.assert_close(relative_c2w(G @ clip), rel)
    # Not invariant to a change of the camera frame (right-multiplication) in general.
    assert (relative_c2w(clip @ G) - rel).abs().max() > 1e-3
    batched = relative_c2w(torch.stack([clip, G @ clip]))
    torch.testing.assert_close(batched[0], batched[1])


def test_invert_rigid(gen):
    T = random_c2w(gen, 4)
    torch.testing.assert_close(invert_rigid(T) @ T, torch.eye(4, dtype=DT).expand(4, 4, 4))
    torch.testing.assert_close(invert_rigid(T), torch.linalg.inv(T))


# ----------------------------------------------------------------------------- projection


def test_project_backproject_round_trip(gen):
    K = skewed_K()
    pts = torch.randn(2, 50, 3, generator=gen, dtype=DT) * 0.3 + torch.tensor([0.0, 0.0, 2.0], dtype=DT)
    uv = project(pts, K)
    assert uv.shape == (2, 50, 2)
    torch.testing.assert_close(backproject(uv, pts[..., 2], K), pts)
    # With a world-to-camera transform.
    w2c = random_c2w(gen)
    world = transform_points(invert_rigid(w2c), pts)
    torch.testing.assert_close(project(world, K, w2c=w2c), uv)


def test_project_pixel_centre_convention():
    K = intrinsics_from_fov(90.0, H, W, dtype=DT)
    centre = project(torch.tensor([[0.0, 0.0, 1.0]], dtype=DT), K)[0]
    torch.testing.assert_close(centre, torch.tensor([W / 2, H / 2], dtype=DT))
    # 90 degrees horizontal: x = z maps to the right image border.
    edge = project(torch.tensor([[1.0, 0.0, 1.0]], dtype=DT), K)[0]
    torch.testing.assert_close(edge[0], torch.tensor(float(W), dtype=DT))


def test_scale_intrinsics_matches_resizing(gen):
    K = skewed_K()
    pts = torch.randn(20, 3, generator=gen, dtype=DT) * 0.2 + torch.tensor([0.0, 0.0, 1.5], dtype=DT)
    K2 = scale_intrinsics(K, 2.0, 0.5)
    uv, uv2 = project(pts, K), project(pts, K2)
    torch.testing.assert_close(uv2, uv * torch.tensor([2.0, 0.5], dtype=DT))
    # Pixel (0, 0) of the half-size image is centred on (1, 1) of the full-size one: same ray.
    half = plucker_rays(scale_intrinsics(K, 0.5), torch.eye(4, dtype=DT), 2, 3)
    ray = backproject(torch.tensor([[1.0, 1.0]], dtype=DT), torch.ones(1, dtype=DT), K)[0]
    torch.testing.assert_close(half[:3, 0, 0], ray / ray.norm())


def test_look_at_sees_target_at_principal_point(gen):
    K = intrinsics_from_fov(60.0, H, W, dtype=DT)
    for up in [(0.0, -1.0, 0.0), (0.0, 0.0, 1.0)]:
        eye = torch.randn(6, 3, generator=gen, dtype=DT)
        target = torch.randn(6, 3, generator=gen, dtype=DT)
        c2w = look_at(eye, target, up)
        R = c2w[..., :3, :3]
        torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=DT).expand(6, 3, 3))
        torch.testing.assert_close(torch.det(R), torch.ones(6, dtype=DT))
        cam = transform_points(invert_rigid(c2w), target[:, None, :])
        assert (cam[..., 2] > 0).all()
        torch.testing.assert_close(project(cam, K)[:, 0], torch.tensor([W / 2, H / 2], dtype=DT).expand(6, 2))
        # The camera's y axis (down) points away from "up".
        up_t = torch.tensor(up, dtype=DT)
        assert ((R[..., :, 1] * up_t).sum(-1) <= 1e-9).all()


def test_look_at_convention_and_degenerate_up():
    c2w = look_at(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(c2w, torch.eye(4))  # default up (0, -1, 0): the identity camera
    straight_down = look_at(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]))
    R = straight_down[:3, :3]
    assert torch.isfinite(R).all()
    torch.testing.assert_close(R.T @ R, torch.eye(3))
    torch.testing.assert_close(R[:, 2], torch.tensor([0.0, -1.0, 0.0]))


# ----------------------------------------------------------------------------- rotations


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, 2.0, math.pi - 1e-6, math.pi])
def test_axis_angle_round_trip_near_zero_and_pi(gen, angle):
    axis = torch.nn.functional.normalize(torch.randn(16, 3, generator=gen, dtype=DT), dim=-1)
    aa = axis * angle
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=DT).expand(16, 3, 3))
    back = matrix_to_axis_angle(R)
    assert torch.isfinite(back).all()
    if angle > math.pi - 1e-3:  # axis sign is ambiguous near pi: compare the rotations
        torch.testing.assert_close(axis_angle_to_matrix(back), R, atol=1e-7, rtol=0)
        torch.testing.assert_close(back.norm(dim=-1), torch.full((16,), angle, dtype=DT), atol=1e-7, rtol=0)
    else:
        torch.testing.assert_close(back, aa, atol=1e-10, rtol=1e-7)


def test_axis_angle_matches_rodrigues_and_gradients_at_zero():
    aa = torch.tensor([0.0, 0.0, math.pi / 2], dtype=DT)
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=DT)
    torch.testing.assert_close(axis_angle_to_matrix(aa), expected)
    zero = torch.zeros(3, dtype=DT, requires_grad=True)
    axis_angle_to_matrix(zero)[0, 1].backward()
    assert torch.isfinite(zero.grad).all() and zero.grad[2] == -1.0  # d R01 / d w_z = -1 at 0
    for R in (torch.eye(3, dtype=DT), axis_angle_to_matrix(torch.tensor([0.0, math.pi, 0.0], dtype=DT))):
        R = R.clone().requires_grad_(True)
        matrix_to_axis_angle(R).sum().backward()
        assert torch.isfinite(R.grad).all()


def test_quaternion_6d_9d_round_trips(gen):
    R = random_rotation(gen, 32)
    q = matrix_to_quaternion(R)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quaternion_to_matrix(q), R)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R)
    torch.testing.assert_close(rotation_9d_to_matrix(matrix_to_rotation_9d(R)), R)
    # Decoders project noisy inputs onto SO(3).
    noise = 0.05 * torch.randn(32, 9, generator=gen, dtype=DT)
    noisy = rotation_9d_to_matrix(matrix_to_rotation_9d(R) + noise)
    torch.testing.assert_close(noisy.transpose(-1, -2) @ noisy, torch.eye(3, dtype=DT).expand(32, 3, 3))
    torch.testing.assert_close(torch.det(noisy), torch.ones(32, dtype=DT))
    assert (noisy - R).abs().max() < 0.2
    scaled6 = rotation_6d_to_matrix(3.0 * matrix_to_rotation_6d(R))
    torch.testing.assert_close(scaled6, R)
