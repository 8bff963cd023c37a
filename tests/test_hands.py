"""Tests for hand2world.hands: open model build, LBS, MANO loading, landmark fitting, smoothing."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from torch.func import jacfwd, vmap

from hand2world.hands import (
    MEDIAPIPE_JOINT_NAMES,
    HandModel,
    HandPose,
    OneEuroFilter,
    build_open_hand,
    fit_landmarks,
    load_mano_pickle,
    random_hand_pose,
    reprojection_error,
)
from hand2world.hands.fit import _Problem
from hand2world.hands.lbs import axis_angle_to_matrix, lbs, lbs_with_jacobian, matrix_to_axis_angle
from hand2world.hands.mano import (
    build_smplx_mano,
    fix_left_shapedirs,
    from_mano_hand_pose,
    to_mano_hand_pose,
)
from hand2world.hands.open_model import default_glb_path, load_open_hand, read_glb_skin, winding_numbers
from hand2world.hands.skeleton import (
    MANO_TIP_VERTICES,
    MANO_TO_OURS,
    MEDIAPIPE_ARTICULATED,
    MEDIAPIPE_FROM_INTERNAL,
)

K_TEST = torch.tensor([[256.0, 0.0, 128.0], [0.0, 256.0, 128.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
MIRROR_POSE = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
MIRROR_POINT = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)

needs_glb = pytest.mark.skipif(
    not default_glb_path("right").is_file(), reason="npm assets (client/node_modules) not installed"
)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def open_paths(tmp_path_factory):
    if not default_glb_path("right").is_file():
        pytest.skip("npm assets (client/node_modules) not installed")
    root = tmp_path_factory.mktemp("open_hand")
    return {side: build_open_hand(side, out=root / f"open_hand_{side}.npz") for side in ("right", "left")}


@pytest.fixture(scope="module")
def models(open_paths):
    return {side: HandModel.load("open", side, path=p) for side, p in open_paths.items()}


def _scene(model: HandModel, batch: int, seed: int):
    """Random plausible hands 0.3-0.7 m in front of a 256x256 camera, all landmarks in frame."""
    gen = torch.Generator().manual_seed(seed)
    pose = random_hand_pose(model, batch, gen, dtype=torch.float64)
    centre = model.joints_only(pose).mean(1)
    depth = 0.3 + 0.4 * torch.rand(batch, generator=gen, dtype=torch.float64)
    offset = (torch.rand(batch, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.1 * depth[:, None]
    pose.transl = torch.cat([offset, depth[:, None]], 1) - centre
    cam = model.joints_only(pose)
    proj = cam @ K_TEST.T
    uv = proj[..., :2] / proj[..., 2:]
    assert (uv > 0).all() and (uv < 256).all() and (cam[..., 2] > 0.1).all()
    return pose, cam, uv


# ------------------------------------------------------------------------------------------ open model
@needs_glb
def test_glb_bind_pose_is_consistent_and_metric():
    skin = read_glb_skin(default_glb_path("right"))
    assert len(skin.joint_names) == 25
    # node hierarchy (world TRS) agrees with inv(inverseBindMatrices): vertices and joints share a frame
    np.testing.assert_allclose(skin.node_world, skin.bind_joints, atol=1e-5)
    extent = skin.positions.max(0) - skin.positions.min(0)
    assert 0.1 < extent.max() < 0.3  # a hand in metres
    np.testing.assert_allclose(skin.weights.sum(1), 1.0, atol=1e-5)


def test_open_model_file(open_paths):
    for side, path in open_paths.items():
        assert path.stat().st_size < 1_000_000
        data = load_open_hand(path)
        num_v = data["v_template"].shape[0]
        assert data["faces"].shape[1] == 3 and data["weights"].shape == (num_v, 16)
        assert data["j_template"].shape == (21, 3) and data["j_shapedirs"].shape == (21, 3, 10)
        assert data["shapedirs"].shape == (num_v, 3, 10) and data["parents"].shape == (16,)
        assert str(data["side"]) == side and "MIT" in str(data["licence"])
        np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(data["j_template"][0], 0.0, atol=1e-7)  # wrist at the origin
        tips = data["j_template"][[4, 8, 12, 16, 20]]
        np.testing.assert_allclose(tips, data["v_template"][data["tip_vertex_ids"]], atol=1e-7)
        v, f = data["v_template"].astype(np.float64), data["faces"]
        # closed 2-manifold, wound outwards (positive volume), joints inside the bind-pose mesh
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all()
        volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
        assert 2e-4 < volume < 6e-4  # m^3: an adult hand is ~300-450 cm^3
        inside = winding_numbers(v, f, data["j_template"][list(MEDIAPIPE_ARTICULATED)].astype(np.float64))
        assert (inside > 0.9).all()
        # palm faces +z, fingers -y; the thumb is on -x for the right hand and +x for the left
        assert data["j_template"][9, 1] < -0.05
        assert (data["j_template"][4, 0] < 0) == (side == "right")


def test_build_is_idempotent(open_paths, tmp_path):
    first = load_open_hand(open_paths["right"])
    again = load_open_hand(build_open_hand("right", out=open_paths["right"]))
    for key in ("v_template", "faces", "weights", "shapedirs"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not list(open_paths["right"].parent.glob(".*tmp"))


def test_shape_directions(models):
    model = models["right"]
    rest = model.rest_joints()[0].double()
    betas = torch.zeros(1, 10)
    betas[0, 0] = 1.0
    scaled = model.rest_joints(betas)[0].double()
    np.testing.assert_allclose(scaled.numpy(), 1.06 * rest.numpy(), atol=1e-6)  # beta 0: 6 % scale
    for k, tip in zip(range(5, 10), (4, 8, 12, 16, 20), strict=True):  # per-finger length
        betas = torch.zeros(1, 10)
        betas[0, k] = 1.0
        moved = (model.rest_joints(betas)[0] - rest).norm(dim=-1)
        assert moved[tip] > 2e-3 and moved[0] == 0 and moved.argmax() == tip


# ------------------------------------------------------------------------------------------ LBS
def test_zero_pose_and_shapes(models, open_paths):
    model = models["right"]
    for dtype in (torch.float32, torch.float64):
        out = model(HandPose.zeros(3, dtype=dtype))
        assert out.vertices.shape == (3, model.num_vertices, 3) and out.vertices.dtype == dtype
        assert out.joints.shape == (3, 21, 3) and out.side == "right"
        assert out.faces.dtype == torch.long and out.faces.shape[1] == 3
        np.testing.assert_allclose(out.vertices[1].numpy(), model.v_template.numpy(), atol=1e-6)
        np.testing.assert_allclose(
            out.joints[2].numpy(), load_open_hand(open_paths["right"])["j_template"], atol=1e-6
        )
    assert len(MEDIAPIPE_JOINT_NAMES) == 21 and model.faces.shape[0] > 1000


def test_transl_and_orientation_about_wrist(models):
    model = models["right"]
    pose = HandPose.zeros(1, dtype=torch.float64)
    pose.global_orient[0, 2] = 1.0
    pose.transl[0] = torch.tensor([0.1, -0.2, 0.5], dtype=torch.float64)
    joints = model(pose).joints[0]
    np.testing.assert_allclose(joints[0].numpy(), [0.1, -0.2, 0.5], atol=1e-6)  # wrist stays on transl
    np.testing.assert_allclose(model.joints_only(pose)[0].numpy(), joints.numpy(), atol=1e-6)


def test_hand_pose_helpers():
    pose = HandPose.zeros(4)
    assert pose.batch_size == 4 and pose.to_vector().shape == (4, 61)
    vec = torch.randn(4, 61)
    back = HandPose.from_vector(vec)
    assert torch.equal(back.to_vector(), vec)
    assert back[1].batch_size == 1 and torch.equal(back[1].betas, vec[1:2, 48:58])
    assert back[1:3].batch_size == 2 and back[-1].batch_size == 1
    assert not HandPose.from_vector(vec.requires_grad_()).detach().hand_pose.requires_grad


def test_left_mirrors_right(models):
    right, left = models["right"], models["left"]
    pose = random_hand_pose(right, 8, torch.Generator().manual_seed(1), dtype=torch.float64)
    mirrored = HandPose(
        pose.global_orient * MIRROR_POSE,
        (pose.hand_pose.view(8, 15, 3) * MIRROR_POSE).flatten(1),
        pose.betas,
        pose.transl,
    )
    err = (right(pose).joints * MIRROR_POINT - left(mirrored).joints).norm(dim=-1)
    assert err.mean() < 2e-3 and err.max() < 1e-2


def test_gradients_flow(models):
    model = models["left"]
    vec = torch.zeros(2, 61, requires_grad=True)  # includes the singular-looking zero rotation
    out = model(HandPose.from_vector(vec))
    (out.vertices.square().sum() + out.joints.sum()).backward()
    assert torch.isfinite(vec.grad).all()
    assert (vec.grad[:, :48].abs().sum(0) > 0).sum() >= 45 and (vec.grad[:, 48:].abs() > 0).all()


def test_rotation_conversions():
    aa = torch.randn(200, 3, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(200, 1, dtype=torch.float64) * 3.1
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa)).numpy(), aa.numpy(), atol=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's jvp decompositions use torch.jit.script
def test_analytic_jacobians_match_autodiff(models):
    model = models["right"]
    problem = _Problem(model, 0.005, 2.0, 1.0, 0.3, torch.float64, torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    params = torch.randn(3, 61, generator=gen, dtype=torch.float64) * 0.4
    params[:, 58:] = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    params[0, 6:9] = 0.0  # exercise the zero-angle branch
    data = (
        torch.randn(3, 21, 3, dtype=torch.float64) * 0.05,
        torch.rand(3, 21, 2, dtype=torch.float64) * 256,
        K_TEST.expand(3, 3, 3),
    )
    r, jac = problem.evaluate(params, data, jacobian=True)
    jac_ad, r_ad = vmap(jacfwd(problem.single, has_aux=True))(params, *data)
    torch.testing.assert_close(r, r_ad)
    torch.testing.assert_close(jac, jac_ad, atol=1e-8, rtol=1e-8)


# ------------------------------------------------------------------------------------------ MANO
def _fake_mano(model_arrays: dict, rng: np.random.Generator, sparse: bool, flat_posedirs: bool) -> dict:
    """A MANO-format dict (778 vertices) borrowing plausible geometry from the open model."""
    import scipy.sparse as sp

    num_v = 778
    verts = model_arrays["v_template"][:num_v].astype(np.float64)
    ours = model_arrays["j_template"][list(MEDIAPIPE_ARTICULATED)].astype(np.float64)
    mano_of_ours = np.argsort(MANO_TO_OURS)  # MANO joint m is our joint mano_of_ours[m]
    regressor = np.zeros((16, num_v))
    for m in range(16):
        near = np.argsort(np.linalg.norm(verts - ours[mano_of_ours[m]], axis=1))[:12]
        regressor[m, near] = rng.random(12) + 0.5
    regressor /= regressor.sum(1, keepdims=True)
    return {
        "v_template": verts,
        "f": rng.integers(0, num_v, (1538, 3)).astype(np.uint32),
        "weights": model_arrays["weights"][:num_v][:, mano_of_ours].astype(np.float64),
        "shapedirs": rng.normal(0, 2e-3, (num_v, 3, 10)),
        "posedirs": rng.normal(0, 1e-3, (num_v * 3, 135) if flat_posedirs else (num_v, 3, 135)),
        "J_regressor": sp.csc_matrix(regressor) if sparse else regressor,
        "kintree_table": np.array(
            [[4294967295, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], list(range(16))], dtype=np.int64
        ),
        "hands_components": np.linalg.qr(rng.normal(size=(45, 45)))[0],
        "hands_mean": rng.normal(0, 0.1, 45),
        "bs_style": "lbs",
    }


def _dump_with_chumpy(
    data: dict, path, protocol: int = 2, keys=("shapedirs", "v_template", "hands_components")
):
    """Pickle ``data`` with the chosen entries wrapped in a class that pickles as ``chumpy.ch.Ch``."""
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x, "_dirty": False, "label": None}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = package, module
    try:
        with open(path, "wb") as fh:
            pickle.dump({k: (Ch(v) if k in keys else v) for k, v in data.items()}, fh, protocol=protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert b"chumpy.ch" in path.read_bytes()


@pytest.fixture(scope="module")
def mano_dir(open_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("mano_models")
    rng = np.random.default_rng(0)
    for side in ("right", "left"):
        _dump_with_chumpy(
            _fake_mano(load_open_hand(open_paths[side]), rng, True, False), root / f"MANO_{side.upper()}.pkl"
        )
    return root


@pytest.mark.parametrize(("sparse", "flat_posedirs", "protocol"), [(True, False, 2), (False, True, 0)])
def test_load_mano_pickle(open_paths, tmp_path, sparse, flat_posedirs, protocol):
    data = _fake_mano(load_open_hand(open_paths["right"]), np.random.default_rng(1), sparse, flat_posedirs)
    path = tmp_path / "MANO_RIGHT.pkl"
    _dump_with_chumpy(data, path, protocol=protocol)
    assert "chumpy" not in sys.modules
    loaded = load_mano_pickle(path)
    expect = {
        "v_template": (778, 3),
        "shapedirs": (778, 3, 10),
        "J_regressor": (16, 778),
        "weights": (778, 16),
        "kintree_table": (2, 16),
        "hands_components": (45, 45),
        "hands_mean": (45,),
        "f": (1538, 3),
    }
    for key, shape in expect.items():
        assert isinstance(loaded[key], np.ndarray) and loaded[key].shape == shape, key
    np.testing.assert_array_equal(loaded["shapedirs"], data["shapedirs"])
    regressor = data["J_regressor"].toarray() if sparse else data["J_regressor"]
    np.testing.assert_array_equal(loaded["J_regressor"], regressor)
    model = HandModel.load("mano", "right", mano_dir=tmp_path)
    assert model.num_vertices == 778 and model.posedirs.shape == (135, 778 * 3)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((2, 3)), "x": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        load_mano_pickle(path)
    path.write_bytes(pickle.dumps({"x": Evil()}, protocol=0))
    with pytest.raises(pickle.UnpicklingError):
        load_mano_pickle(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mano_matches_smplx(mano_dir):
    model = HandModel.load("mano", "right", mano_dir=mano_dir)
    layer = build_smplx_mano(load_mano_pickle(mano_dir / "MANO_RIGHT.pkl"), "right", dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    batch = 4
    pose = HandPose(
        torch.randn(batch, 3, generator=gen, dtype=torch.float64) * 0.5,
        torch.randn(batch, 45, generator=gen, dtype=torch.float64) * 0.3,
        torch.randn(batch, 10, generator=gen, dtype=torch.float64),
        torch.randn(batch, 3, generator=gen, dtype=torch.float64) * 0.1,
    )
    ours = model(pose)
    to_mano = [
        int(np.argsort(MANO_TO_OURS)[m]) - 1 for m in range(1, 16)
    ]  # our hand_pose block per MANO joint
    ref = layer(
        betas=pose.betas,
        global_orient=pose.global_orient,
        hand_pose=pose.hand_pose.view(batch, 15, 3)[:, to_mano].reshape(batch, 45),
        transl=pose.transl,
    )
    torch.testing.assert_close(ours.vertices, ref.vertices, atol=1e-6, rtol=0)
    mano_pose = to_mano_hand_pose(pose.hand_pose)
    torch.testing.assert_close(mano_pose, pose.hand_pose.view(batch, 15, 3)[:, to_mano].reshape(batch, 45))
    torch.testing.assert_close(from_mano_hand_pose(mano_pose), pose.hand_pose)
    joints21 = torch.cat([ref.joints[:, list(MANO_TO_OURS)], ref.vertices[:, list(MANO_TIP_VERTICES)]], 1)
    torch.testing.assert_close(ours.joints, joints21[:, list(MEDIAPIPE_FROM_INTERNAL)], atol=1e-6, rtol=0)
    # the fitter's analytic Jacobian also covers MANO's pose correctives
    ids = model.tip_vertex_ids
    cols = (ids[:, None] * 3 + torch.arange(3)).reshape(-1)
    arrays = {
        "j_template": model.j_template.double(),
        "j_shapedirs": model.j_shapedirs.double(),
        "v_template": model.v_template[ids].double(),
        "shapedirs": model.shapedirs[ids].double(),
        "weights": model.weights[ids].double(),
    }
    aa = torch.randn(2, 16, 3, generator=gen, dtype=torch.float64) * 0.5
    betas = torch.randn(2, 10, generator=gen, dtype=torch.float64)
    _, tips, _, d_tips = lbs_with_jacobian(
        aa, betas, tree=model.tree, posedirs=model.posedirs[:, cols].double(), **arrays
    )

    def tip_fn(x):
        pts, _ = lbs(
            x[48:].view(1, 10),
            axis_angle_to_matrix(x[:48].view(1, 16, 3)),
            arrays["v_template"],
            arrays["shapedirs"],
            arrays["weights"],
            arrays["j_template"],
            arrays["j_shapedirs"],
            model.tree,
            model.posedirs[:, cols].double(),
        )
        return pts[0]

    x0 = torch.cat([aa[0].flatten(), betas[0]])
    torch.testing.assert_close(d_tips[0], jacfwd(tip_fn)(x0))


def test_mano_dir_resolution(mano_dir, tmp_path, monkeypatch):
    nested = tmp_path / "licensed" / "mano"
    nested.mkdir(parents=True)
    (nested / "MANO_LEFT.pkl").write_bytes((mano_dir / "MANO_LEFT.pkl").read_bytes())
    assert HandModel.load("mano", "left", mano_dir=tmp_path / "licensed").side == "left"
    monkeypatch.setenv("HAND2WORLD_MANO_DIR", str(mano_dir))
    assert HandModel.load("mano", "right").kind == "mano"
    monkeypatch.delenv("HAND2WORLD_MANO_DIR")
    with pytest.raises(FileNotFoundError, match="HAND2WORLD_MANO_DIR"):
        HandModel.load("mano", "right")


def test_left_shapedirs_fix():
    right = {"shapedirs": np.random.default_rng(0).normal(size=(10, 3, 10))}
    left = {"shapedirs": right["shapedirs"].copy()}
    assert fix_left_shapedirs(left, right)
    np.testing.assert_array_equal(left["shapedirs"][:, 0], -right["shapedirs"][:, 0])
    assert not fix_left_shapedirs(left, right)  # already mirrored


# ------------------------------------------------------------------------------------------ fitting
@pytest.mark.parametrize("side", ["right", "left"])
def test_fit_landmarks_floors(models, side):
    model = models[side]
    _, cam, uv = _scene(model, 16, seed=10 + (side == "left"))
    world = (cam - cam.mean(1, keepdim=True)).float()  # MediaPipe-style hand-centred world landmarks
    fit = fit_landmarks(model, world, uv.float(), K_TEST.float())
    assert fit.batch_size == 16 and fit.to_vector().dtype == torch.float32
    joints = model.joints_only(fit.to(dtype=torch.float64))
    joint_err = (joints - cam).norm(dim=-1).mean(1)
    pixel_err = reprojection_error(joints, uv, K_TEST).mean(1)
    assert joint_err.mean() <= 5e-3 and joint_err.max() <= 5e-3, joint_err
    assert pixel_err.mean() <= 2.0 and pixel_err.max() <= 2.0, pixel_err


def test_fit_warm_start_and_world_only(models):
    model = models["right"]
    pose, cam, uv = _scene(model, 1, seed=3)
    first = fit_landmarks(model, cam[0] - cam[0].mean(0), uv[0], K_TEST)  # unbatched [21, 3] inputs
    nxt = pose.clone()
    nxt.hand_pose = nxt.hand_pose + 0.05
    nxt.transl = nxt.transl + torch.tensor([[0.01, 0.0, 0.01]], dtype=torch.float64)
    cam2 = model.joints_only(nxt)
    proj = cam2 @ K_TEST.T
    uv2 = proj[..., :2] / proj[..., 2:]
    # speed of the warm-started fit is measured by `hand2world bench fit`, not here
    second = fit_landmarks(model, cam2 - cam2.mean(1, keepdim=True), uv2, K_TEST, init=first)
    err = (model.joints_only(second.to(dtype=torch.float64)) - cam2).norm(dim=-1).mean()
    assert err < 5e-3
    # without image landmarks the hand is placed on the world landmarks' centroid
    world_only = fit_landmarks(model, cam2, init=first)
    joints = model.joints_only(world_only.to(dtype=torch.float64))
    torch.testing.assert_close(joints.mean(1), cam2.mean(1), atol=1e-6, rtol=0)
    assert (joints - cam2).norm(dim=-1).mean() < 5e-3
    # shape can be frozen for streams
    frozen = fit_landmarks(model, cam2, init=first, optimize_shape=False)
    torch.testing.assert_close(frozen.betas, first.betas.to(frozen.betas.dtype))


# ------------------------------------------------------------------------------------------ smoothing
def test_one_euro_smooths_noise_and_follows_steps():
    rng = np.random.default_rng(0)
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    times = np.arange(300) / 30.0
    noisy = 0.01 * rng.normal(size=(300, 21, 3))
    smooth = np.stack([filt(x, t) for x, t in zip(noisy, times, strict=True)])
    assert smooth.shape == noisy.shape
    assert smooth[30:].var() < 0.2 * noisy[30:].var()
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    out = [filt(np.full(2, 0.0 if t < 1.0 else 1.0), t) for t in times]
    assert abs(out[-1][0] - 1.0) < 1e-3 and 0.0 < out[31][0] < 1.0  # converges, but not instantly
    filt.reset()
    np.testing.assert_array_equal(filt(np.ones((4, 4)), 0.0), np.ones((4, 4)))
