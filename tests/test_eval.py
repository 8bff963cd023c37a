"""Evaluation: metrics on known inputs, LPIPS/FVD from (test-made) weights, and `hand2world eval` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO_DIT

from hand2world.eval import metrics as M
from hand2world.eval.adapters import parse_model_arg
from hand2world.eval.networks import LPIPS, fvd, load_fvd_detector, load_lpips
from hand2world.eval.scores import long_metrics
from hand2world.geometry import rotation_angle_deg


def _photo(size: int = 128) -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def test_identical_frames_psnr_inf_ssim_one():
    a = np.stack([_photo(64)] * 3)
    assert M.psnr(a, a) == float("inf")
    assert np.all(np.isinf(M.psnr_frames(a, a)))
    assert M.ssim(a[0], a[0]) == pytest.approx(1.0, abs=1e-9)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert 20 < M.psnr(a, b) < 40


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    a = _photo(96)
    b = np.clip(a + np.random.default_rng(0).normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=-1)
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-6)
    assert M.ssim(a, b) < 0.9


def test_region_psnr_only_looks_inside_mask():
    a = np.stack([_photo(64)] * 2)
    mask = np.zeros(a.shape[:3], bool)
    mask[:, 20:40, 20:40] = True
    b = a.copy()
    b[~mask] = 255 - b[~mask]  # wreck everything outside
    assert M.region_psnr(b, a, mask) == float("inf")
    assert M.psnr(b, a) < 15
    c = a.copy()
    c[mask] = 0  # wreck the inside only
    assert M.region_psnr(c, a, mask) < 15
    assert M.region_psnr(c, a, np.zeros_like(mask)) is None  # empty region: not measurable
    d = M.dilate_masks(mask, 2)
    assert d.sum() > mask.sum() and d[mask].all()


def _rot_y(deg: float) -> np.ndarray:
    r = np.radians(deg)
    return np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])


def test_camera_rotation_from_known_homography():
    """Two views of a real photo related by a pure camera rotation: the estimate matches it."""
    import cv2

    from hand2world.geometry import intrinsics_from_fov

    src = _photo(512)
    K_src = np.asarray(intrinsics_from_fov(70.0, 512, 512), np.float64)
    K = K_src.copy()
    K[:2, 2] = 64.0  # 128x128 views, same focal length
    R = _rot_y(4.0) @ cv2.Rodrigues(np.array([0.03, 0.0, 0.02]))[0]  # camera a -> camera b coordinates
    c2w_a, c2w_b = np.eye(4), np.eye(4)
    c2w_b[:3, :3] = R.T  # x_b = R_b^T x_a with R_b = c2w_b[:3, :3]

    def view(Rv: np.ndarray) -> np.ndarray:
        H = K @ Rv @ np.linalg.inv(K_src)  # source pixel -> view pixel (pixel centres at i + 0.5)
        shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]) @ H @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        return cv2.warpPerspective(src, shift, (128, 128), flags=cv2.INTER_LINEAR)

    a, b = view(np.eye(3)), view(R)
    mask = np.zeros((128, 128), bool)
    mask[80:, 40:90] = True  # a "hand" to ignore
    b_masked = b.copy()
    b_masked[mask] = 0
    est = M.estimate_rotation(a, b_masked, K, mask, mask)
    R_gt = M.gt_relative_rotation(c2w_a, c2w_b)
    assert np.allclose(R_gt, R)
    assert est.ok
    assert rotation_angle_deg(est.R @ R_gt.T) < 0.5
    assert rotation_angle_deg(R_gt) > 4.0
    # soft frames, as a small generator makes them: still measured (the SIFT estimator failed here)
    soft = cv2.GaussianBlur(b, (0, 0), 1.5)
    soft[mask] = 0
    est_soft = M.estimate_rotation(a, soft, K, mask, mask)
    assert est_soft.ok and rotation_angle_deg(est_soft.R @ R_gt.T) < 0.75
    blank = np.zeros_like(a)
    assert not M.estimate_rotation(blank, blank, K).ok
    # RANSAC keeps the rotation with a third of the correspondences wrong
    rng = np.random.default_rng(1)
    p1 = rng.uniform(0, 128, (90, 2))
    b1 = np.c_[p1, np.ones(90)] @ np.linalg.inv(K).T
    q = b1 @ R.T @ K.T
    p2 = q[:, :2] / q[:, 2:]
    p2[:30] = rng.uniform(0, 128, (30, 2))
    R_fit, inl = M.rotation_ransac(p1, p2, K)
    assert rotation_angle_deg(R_fit @ R.T) < 1e-3 and inl[30:].all() and inl[:30].sum() <= 3


def test_flicker_higher_for_flickering_sequence():
    base = _photo(160)
    gt = np.stack([base[i:i + 128, i:i + 128] for i in range(8)])  # slow pan
    jitter = np.array([20, -20] * 4).reshape(8, 1, 1, 1)  # brightness alternating frame to frame
    flick = np.clip(gt.astype(int) + jitter, 0, 255).astype(np.uint8)
    assert M.flicker(gt, gt) == 0.0
    steady = np.clip(gt.astype(int) + 10, 0, 255).astype(np.uint8)  # constant offset: no flicker
    assert M.flicker(steady, gt) < 1.0
    assert M.flicker(flick, gt) > 10.0
    mask = np.zeros(gt.shape[:3], bool)
    mask[:, :64] = True
    assert M.flicker(flick, gt, mask) > 10.0
    assert M.flicker(np.repeat(gt[:1], 8, 0), gt) > M.flicker(steady, gt)  # a frozen copy misses the true change


def test_long_metrics_detect_collapse():
    base = _photo(64)
    gt = np.stack([base] * 17)
    fade = np.stack([(base * (1 - k / 16) + 128 * k / 16).astype(np.uint8) for k in range(17)])
    ok = long_metrics(gt, gt, (8, 16))
    bad = long_metrics(fade, gt, (8, 16))
    assert not ok["collapsed"] and ok["psnr_drop_db"] == 0.0
    assert bad["collapsed"] and bad["psnr_drop_db"] > 3.0 and bad["contrast_drift"] < 0.5
    assert [s["frames"] for s in bad["segments"]] == [[1, 8], [9, 16]]
    assert set(bad["psnr_by_length"]) == {"8", "16"}


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_lpips_and_fvd_need_weights(tmp_path):
    model, reason = load_lpips(tmp_path)
    assert model is None and "alexnet-owt-7be5be79.pth" in reason
    det, reason = load_fvd_detector(tmp_path)
    assert det is None and "i3d_torchscript.pt" in reason
    # weights in the standard layouts, random here
    torch.manual_seed(0)
    ref = LPIPS()
    alex = {f"features.{k}": v for k, v in ref.net.features.state_dict().items()}
    alex["classifier.1.weight"] = torch.zeros(1)  # ignored keys of the torchvision file
    torch.save(alex, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS.CHANNELS)},
               tmp_path / "lpips_alex.pth")
    model, reason = load_lpips(tmp_path)
    assert model is not None and reason == ""
    a = np.stack([_photo(64)] * 2)
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert np.allclose(model.frames(a, a), 0.0)
    assert (model.frames(b, a) > 0).all()

    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = True) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)

    torch.jit.script(Detector()).save(str(tmp_path / "i3d_torchscript.pt"))
    det, _ = load_fvd_detector(tmp_path)
    rng = np.random.default_rng(0)
    real = [rng.integers(0, 255, (17, 32, 32, 3), dtype=np.uint8) for _ in range(4)]
    dark = [(v // 3).astype(np.uint8) for v in real]
    same = fvd(det, real, real)
    assert same["windows"] == 4 and abs(same["fvd"]) < 1e-6
    assert fvd(det, dark, real)["fvd"] > 1e-3
    assert fvd(det, real[:1], real[:1])["fvd"] == "unavailable"


def test_paired_differences_compare_the_same_clips():
    """A model 0.5 dB worse than the reference on every clip shows +0.5 with zero spread, even when the clips
    themselves differ by several dB; clips without occlusion are left out of that metric only."""
    from hand2world.eval.scores import paired_differences

    base = [{"psnr": 15.0 + 3 * i, "hand_psnr": 12.0 + i, "occluded_psnr": None if i == 0 else 10.0 + i,
             "camera_err_deg": 1.0 + i} for i in range(4)]
    worse = [{k: (None if v is None else v - 0.5) for k, v in c.items()} for c in base]
    for c in worse:
        c["camera_err_deg"] += 1.0  # errors: higher is worse
    mixed = [{**c, "psnr": c["psnr"] + (0.2 if i % 2 else -0.2)} for i, c in enumerate(base)]
    result = {"models": {"repeat scene": {"kind": "baseline", "per_clip": base},
                         "student": {"kind": "student", "per_clip": base},
                         "worse": {"kind": "teacher", "per_clip": worse},
                         "mixed": {"kind": "student", "per_clip": mixed}}}
    p = paired_differences(result)
    assert p["reference"] == "student" and set(p["models"]) == {"worse", "mixed"}
    w = p["models"]["worse"]
    assert w["psnr"]["mean"] == pytest.approx(0.5) and w["psnr"]["se"] == pytest.approx(0.0, abs=1e-12)
    assert w["psnr"]["better"] == 4 and w["occluded_psnr"]["n"] == 3
    assert w["camera_err_deg"]["mean"] == pytest.approx(0.5) and w["camera_err_deg"]["better"] == 4
    m = p["models"]["mixed"]["psnr"]
    assert m["mean"] == pytest.approx(0.0) and m["better"] == 2 and m["se"] > 0.1
    assert paired_differences({"models": {"student": {"kind": "student", "per_clip": base}}}) == {}


def test_parse_model_arg():
    spec = parse_model_arg("novis=student:some/path")
    assert (spec.name, spec.kind, spec.path) == ("novis", "student", "some/path")
    assert parse_model_arg("t=teacher:x").kind == "teacher"
    with pytest.raises(ValueError):
        parse_model_arg("no-equals-sign")


def test_autoencoder_oracle_round_trips_shipped_autoencoder(tmp_path):
    """The round-trip reference with the shipped autoencoder keeps frame 0, changes the others only a little
    and scores far above a blank frame and above repeating the scene."""
    from hand2world.checkpoints import load_autoencoder
    from hand2world.data import ClipDataset
    from hand2world.eval.adapters import AutoencoderOracle, RepeatScene
    from hand2world.eval.scores import CLIP_KEYS, clip_metrics, prepare_clip
    from hand2world.paths import REPO_ROOT
    from hand2world.world.synth import synthesize

    synthesize(tmp_path / "clips", clips=1, frames=5, size=128, seed=5, split="test", progress=False)
    clip = prepare_clip(ClipDataset(tmp_path / "clips", keys=CLIP_KEYS)[0], 128)
    oracle = AutoencoderOracle(load_autoencoder(str(REPO_ROOT / "weights" / "default")).eval())
    frames = oracle.frames(clip)
    assert frames.shape == clip["video"].shape and frames.dtype == np.uint8
    assert np.array_equal(frames[0], clip["scene"]) and not np.array_equal(frames[1:], clip["video"][1:])
    got = clip_metrics(frames, clip, 2)
    repeat = clip_metrics(RepeatScene().generate(clip["video"][0], clip["control"], clip["c2w"], clip["K"]), clip, 2)
    assert got["psnr"] > 18.0 and got["psnr"] > repeat["psnr"]


def test_eval_command_end_to_end(tmp_path, capsys):
    from hand2world.cli import main
    from hand2world.train import TeacherRunConfig, train_teacher
    from hand2world.train.config import from_dict
    from hand2world.train.data import ProceduralClips
    from hand2world.world.synth import synthesize

    cfg = from_dict(TeacherRunConfig, {
        "model": {"preset": "tiny", "overrides": MICRO_DIT},
        "data": {"procedural_clips": 2, "frames": 4, "size": 32},
        "optim": {"steps": 1, "batch_size": 2, "ckpt_every": 100}, "out_dir": str(tmp_path / "run")})
    train_teacher(cfg, dataset=ProceduralClips(n=2, frames=4, size=32))
    data = tmp_path / "test_clips"
    synthesize(data, clips=2, frames=9, size=32, seed=99, split="test", progress=False)
    out = tmp_path / "eval"
    run = str(tmp_path / "run")
    assert main(["eval", "--checkpoint", run, "--teacher", run, "--model", f"ablation=student:{run}",
                 "--data", str(data), "--split", "test", "--out", str(out), "--clips", "2", "--long", "4,8",
                 "--long-data", str(data), "--long-clips", "1", "--teacher-steps", "2", "--no-progress",
                 "--metric-weights", str(tmp_path / "no_weights"), "--real-frames", "6"]) == 0
    printed = json.loads(capsys.readouterr().out)
    warped = "warped photo (0.5 m plane)"
    oracle, ae_oracle = "oracle: flat true-colour hands", "oracle: autoencoder round trip"
    assert set(printed["models"]) == {"ground truth", "repeat scene", warped, oracle, ae_oracle, "student", "teacher",
                                      "ablation"}
    for name in ("metrics.json", "metrics.md", "psnr_frames.png", "long_rollout.png", "grid.mp4", "long_grid.mp4"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    result = json.loads((out / "metrics.json").read_text())
    assert result["clips"] == 2 and result["frames"] == 9 and result["size"] == 32
    assert result["lpips"].startswith("unavailable") and result["fvd"].startswith("unavailable")
    for name in ("repeat scene", warped, "student", "teacher", "ablation"):
        m = result["models"][name]["metrics"]
        assert 0 < m["psnr"] <= M.PSNR_CAP and -1 <= m["ssim"] <= 1
        assert m["camera_err_deg"] is not None and m["flicker"] is not None
        assert len(result["models"][name]["per_clip"][0]["psnr_frames"]) == 8
        assert result["models"][name]["fvd"] == "unavailable"
    assert result["models"]["ground truth"]["metrics"]["camera_err_deg"] is not None
    for name in ("student", "teacher", warped):  # background kept from the warped photo, hands judged by MediaPipe
        assert -1 <= result["models"][name]["metrics"]["bg_ssim"] <= 1
    assert result["models"][warped]["metrics"]["bg_ssim"] > 0.99  # the warped photo is its own background
    assert "hand_frames" in result["models"]["student"]["per_clip"][0]
    assert "hand_frames" in result["models"]["ground truth"]["per_clip"][0]
    real = result["real_photo"]  # the built-in photos driven by the cup video, for every generated model
    assert set(real) == {"student", "teacher", "ablation"}
    from hand2world.server.scenes import BUILTIN_SCENES

    assert set(real["student"]["scenes"]) == set(BUILTIN_SCENES)
    assert all(-1 <= v["background_ssim"] <= 1 for v in real["student"]["scenes"].values())
    assert (out / Path(real["student"]["strip"]).name).stat().st_size > 0
    # the oracle paints the true hands (flat colour) into the warped scene: better hands, same background
    om, wm = result["models"][oracle]["metrics"], result["models"][warped]["metrics"]
    assert result["models"][oracle]["kind"] == "oracle" and om["hand_psnr"] > wm["hand_psnr"] + 1.0
    assert result["models"][ae_oracle]["kind"] == "oracle" and result["models"][ae_oracle]["metrics"]["psnr"] > 0
    long = result["long"]["models"]
    assert set(long) == {"repeat scene", warped, "student", "ablation"}
    assert long["student"]["segment_frames"] == [[1, 4], [5, 8]] and len(long["student"]["psnr_frames"]) == 8
    paired = result["paired"]  # every other generative model against the first (the student)
    assert paired["reference"] == "student" and set(paired["models"]) == {"teacher", "ablation"}
    assert paired["models"]["ablation"]["psnr"]["n"] == 2
    table = (out / "metrics.md").read_text()
    assert "| repeat scene | baseline |" in table and "| ablation | student |" in table and "PSNR 5-8" in table
    assert "Paired per clip against `student`" in table
    from hand2world.io import read_video

    grid = read_video(out / "grid.mp4")
    assert grid.shape == (18, 32, 32 * 5, 3)  # 2 clips x 9 frames; ground truth | control | teacher | 2 students


def test_guide_only_reference_decodes_the_warped_photo_and_control(tmp_path):
    """The deterministic row reads only what a model is given: with its blending weight at 0 it is exactly the
    warped photo (a translated camera included); a conv autoencoder is refused."""
    import dataclasses

    from safetensors.torch import save_file

    from hand2world.eval.adapters import GuideOnlyReference, WarpedScene
    from hand2world.models import AUTOENCODER_PRESETS, build_autoencoder, save_config

    cfg = dataclasses.replace(AUTOENCODER_PRESETS["composite-guide-only"], channels=(8, 8), guide_channels=(4, 4, 8))
    ae = build_autoencoder(cfg)
    with torch.no_grad():
        ae.head.bias[3] = -40.0
    folder = tmp_path / "ref"
    folder.mkdir()
    save_config(cfg, folder / "config.json")
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(folder / "model.safetensors"))
    ref = GuideOnlyReference(str(folder))
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    control = np.zeros((3, 32, 32, 3), np.uint8)
    c2w = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    c2w[2, 0, 3] = 0.05
    K = np.array([[30, 0, 16], [0, 30, 16], [0, 0, 1]], np.float32)
    out = ref.generate(scene, control, c2w, K)
    want = WarpedScene().generate(scene, control, c2w, K)
    assert out.shape == (3, 32, 32, 3) and np.abs(out.astype(int) - want).max() <= 1
    with pytest.raises(ValueError, match="composite"):
        bad = tmp_path / "bad"
        bad.mkdir()
        conv = AUTOENCODER_PRESETS["tiny"]
        save_config(conv, bad / "config.json")
        save_file({k: v.contiguous() for k, v in build_autoencoder(conv).state_dict().items()},
                  str(bad / "model.safetensors"))
        GuideOnlyReference(str(bad))
