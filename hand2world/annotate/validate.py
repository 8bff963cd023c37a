"""Validation of the annotation pipeline on synthetic-world clips with exact ground truth.

The pipeline gets only each clip's RGB frames and its intrinsics (the "user gives K" path) and
its outputs are compared with the clip's ground truth:

- hands (MediaPipe path): detection rate (frames where a ground-truth hand is in view and the
  pipeline has that side), side accuracy, and MPJPE of the fitted joints after a rigid
  alignment (rotation + translation per hand and frame, Kabsch; no scale), with scale too
  (PA-MPJPE, as the hand literature reports), and the unaligned camera-space error (which
  includes the monocular depth error);
- hands (fallback, documented): MediaPipe finds the synthetic open-model hands only in some
  clips, so the fitting stage is also validated on the ground-truth landmarks with noise
  (``noise_px`` on the 2-D landmarks, ``noise_m`` on the hand-centred 3-D ones) through the
  same cleaning and fitting code;
- camera: relative rotation error per 16-frame window, ``angle(R_gt^T R_est)`` of
  ``inv(c2w[s]) c2w[s + 15]``, on clips with head motion; translation error of the same
  relative pose (cm, with the pipeline's hand-prior scale) and its direction error where the
  true motion exceeds 1 cm;
- camera with true hand masks (``true_masks``): the same odometry once more on the same frames, the
  hands masked from their ground-truth joints instead of MediaPipe's landmarks. MediaPipe misses most of
  the synthetic world's hands, and a missed hand's tracks are never masked; this separates the
  odometry's own errors from that (``rot_deg_true_masks`` per clip, ``rot_windows_within_2deg_true_masks``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hand2world.annotate.camera import VisualOdometry
from hand2world.annotate.pipeline import AnnotateConfig, annotate_frames, fit_tracks
from hand2world.annotate.tracks import HandTracks, clean_tracks
from hand2world.geometry import rotation_angle_deg

log = logging.getLogger(__name__)

__all__ = ["camera_errors", "diagnose_camera", "gt_tracks", "rigid_mpjpe", "true_mask_camera", "validate_clips",
           "validate_synthetic"]

WINDOW = 16


def rigid_mpjpe(pred: np.ndarray, gt: np.ndarray, scale: bool = False) -> np.ndarray:
    """Mean joint error ``[N]`` (metres) of ``pred [N, 21, 3]`` after the best rotation + translation onto ``gt``.

    ``scale=True`` also fits a scale (Procrustes, the literature's PA-MPJPE).
    """
    p = pred - pred.mean(1, keepdims=True)
    g = gt - gt.mean(1, keepdims=True)
    u, sv, vt = np.linalg.svd(np.einsum("nji,njk->nik", g, p))
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((len(p), 3))
    fix[:, 2] = d
    R = u @ (fix[:, :, None] * vt)
    s = ((sv * fix).sum(-1) / (p ** 2).sum((1, 2)))[:, None, None] if scale else 1.0
    return np.linalg.norm(s * np.einsum("nij,nkj->nki", R, p) - g, axis=-1).mean(-1)


def camera_errors(c2w_est: np.ndarray, c2w_gt: np.ndarray, window: int = WINDOW) -> dict[str, list[float]]:
    """Per ``window``-frame window (non-overlapping): rotation error (deg), translation error (cm), direction (deg)."""
    out: dict[str, list[float]] = {"rot_deg": [], "trans_cm": [], "dir_deg": []}
    for s in range(0, len(c2w_gt) - window + 1, window):
        e = window - 1
        rel_g = np.linalg.inv(c2w_gt[s]) @ c2w_gt[s + e]
        rel_e = np.linalg.inv(c2w_est[s]) @ c2w_est[s + e]
        out["rot_deg"].append(float(rotation_angle_deg(rel_g[:3, :3].T @ rel_e[:3, :3])))
        tg, te = rel_g[:3, 3], rel_e[:3, 3]
        out["trans_cm"].append(float(np.linalg.norm(tg - te) * 100))
        if np.linalg.norm(tg) > 0.01 and np.linalg.norm(te) > 1e-9:
            cos = tg @ te / np.linalg.norm(tg) / np.linalg.norm(te)
            out["dir_deg"].append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return out


def diagnose_camera(ann, c2w_true: np.ndarray, rot_deg: list[float], tol_deg: float = 2.0) -> dict | None:
    """Why a head-motion clip's trajectory misses the truth: asks the solved odometry how well the true poses
    explain its tracks, and where its adjustment goes when started from them.

    ``verdict``: ``ok`` (every window within ``tol_deg``); ``solver`` (a trajectory at the truth explains the
    tracks better than the kept solution: the true poses themselves, or the adjustment started from them
    when it stays within ``tol_deg``; the solver missed it); ``tracks`` (otherwise: the tracks themselves
    favour a wrong trajectory, e.g. points on moving shadows, slid along stripes or at occlusion edges,
    and no choice among solutions can fix it). Costs are the common robust cost of ``trajectory_cost``.
    None when no bundle adjustment ran.
    """
    vo = ann.odometry
    solved = vo.solved if vo is not None else None
    if solved is None:
        return None
    truth = np.linalg.inv(c2w_true[0]) @ c2w_true
    got = vo.explain(truth)
    kept = solved["kept_cost"]
    refined_err = camera_errors(got["refined_c2w"], c2w_true)["rot_deg"]
    if max(rot_deg, default=0.0) <= tol_deg:
        verdict = "ok"
    elif got["cost"] < kept or (max(refined_err, default=0.0) <= tol_deg and got["refined_cost"] < kept):
        verdict = "solver"
    else:
        verdict = "tracks"
    return {"verdict": verdict, "solution_cost": float(kept), "truth_cost": float(got["cost"]),
            "truth_refined_cost": float(got["refined_cost"]), "truth_refined_rot_deg": refined_err}


def _in_view(joints2d: np.ndarray, joints3d: np.ndarray, width: int, height: int) -> np.ndarray:
    """``[T, 2]``: a ground-truth hand is present, in front of the camera and mostly inside the image."""
    ok = np.isfinite(joints3d[..., 0, 0]) & (np.nan_to_num(joints3d[..., :, 2], nan=-1).min(-1) > 0.05)
    uv = np.nan_to_num(joints2d, nan=-1e9)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)
    return ok & (inside.mean(-1) >= 0.6)


def gt_tracks(clip: dict, noise_px: float, noise_m: float, seed: int = 0) -> HandTracks:
    """Tracks from a clip's ground truth with Gaussian noise (the documented fallback's input)."""
    rng = np.random.default_rng(seed)
    T, H, W = clip["video"].shape[:3]
    valid = _in_view(clip["joints2d"], clip["joints3d"], W, H)
    tracks = HandTracks.empty(T)
    j2, j3 = np.nan_to_num(clip["joints2d"]), np.nan_to_num(clip["joints3d"])
    tracks.image[:] = (j2 + rng.normal(0, noise_px, j2.shape)) / np.array([W, H], np.float32)
    tracks.world[:] = j3 - j3.mean(2, keepdims=True) + rng.normal(0, noise_m, j3.shape)
    tracks.valid[:] = valid
    tracks.score[:] = valid
    tracks.image[~valid] = 0
    tracks.world[~valid] = 0
    return tracks


def true_mask_camera(clip: dict, config: AnnotateConfig, fps: float, scene_depth: float) -> list[float]:
    """Rotation error per 16-frame window (deg) of the pipeline's odometry on a clip's frames with the hands
    masked from their ground-truth joints (every hand found; online, then re-masked as the pipeline does),
    at the pipeline's scale ``scene_depth`` (m)."""
    vo = VisualOdometry(clip["K"], config.odometry, fps=fps)
    hands = [[j[:, :2] for j in joints if np.isfinite(j).all()] for joints in clip["joints2d"]]
    for rgb, frame_hands in zip(clip["video"], hands, strict=True):
        vo.step(rgb, frame_hands)
    vo.remask(hands, config.odometry.remask_dilate)  # as the pipeline does with its cleaned tracks
    return camera_errors(vo.c2w(scene_depth), clip["c2w"])["rot_deg"]


def _summary(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    if not a.size:
        return {"median": None, "max": None, "n": 0}
    return {"median": float(np.median(a)), "max": float(a.max()), "n": int(a.size)}


def validate_clips(dataset, indices: list[int] | None = None, config: AnnotateConfig | None = None,
                   noise_px: float = 1.0, noise_m: float = 0.003, true_masks: bool = False) -> dict:
    """Run the pipeline on clips of a ``ClipDataset`` with ground truth and compare (see module docstring).

    ``true_masks``: also solve each head-motion clip's camera with the hands masked from the truth.

    Returns:
        ``{"clips": [per-clip rows], "summary": {...}}``.
    """
    indices = list(range(len(dataset))) if indices is None else list(indices)
    rows = []
    acc: dict[str, list[float]] = {k: [] for k in ("rot_deg", "trans_cm", "dir_deg", "mpjpe_mm", "pa_mpjpe_mm",
                                                   "mpjpe_abs_mm", "fallback_mpjpe_mm", "fallback_abs_mm",
                                                   "rot_deg_true_masks")}
    seen = expected = side_ok = side_n = 0
    verdicts: dict[str, int] = {}
    for i in tqdm(indices, desc="validate", unit="clip"):
        clip = dataset[i]
        meta = dataset.meta(i)
        T, H, W = clip["video"].shape[:3]
        cfg = replace(config or AnnotateConfig(), size=min(H, W))
        fps = float(clip.get("fps", 16.0))
        ann = annotate_frames(iter(clip["video"]), fps, cfg, K=clip["K"], total=T)
        truth = _in_view(clip["joints2d"], clip["joints3d"], W, H)
        got = ann.clean.valid
        both = truth & got
        row = {"clip": i, "action": meta.get("action"), "head_moving": bool(meta.get("head_moving")),
               "hand_frames": int(truth.sum()), "detected": int(both.sum()),
               "detection_rate": float(both.sum() / max(truth.sum(), 1))}
        seen += int(both.sum())
        expected += int(truth.sum())
        raw_any = ann.raw.valid
        side_n += int(raw_any.sum())
        side_ok += int((raw_any & truth).sum())
        if both.any():
            gt_j, est_j = clip["joints3d"][both], ann.joints3d[both]
            row["mpjpe_mm"] = float(np.mean(rigid_mpjpe(est_j, gt_j)) * 1000)
            row["mpjpe_abs_mm"] = float(np.mean(np.linalg.norm(est_j - gt_j, axis=-1)) * 1000)
            acc["mpjpe_mm"] += list(rigid_mpjpe(est_j, gt_j) * 1000)
            acc["pa_mpjpe_mm"] += list(rigid_mpjpe(est_j, gt_j, scale=True) * 1000)
            acc["mpjpe_abs_mm"] += list(np.linalg.norm(est_j - gt_j, axis=-1).mean(-1) * 1000)
        fb_tracks, _ = clean_tracks(gt_tracks(clip, noise_px, noise_m, seed=i),
                                    replace(cfg.tracks, sigma=cfg.fit_smooth))  # as the pipeline's fit sees them
        fb = fit_tracks(fb_tracks, clip["K"], (W, H), fps, cfg)
        ok = fb_tracks.valid & truth
        if ok.any():
            e = rigid_mpjpe(fb["joints3d"][ok], clip["joints3d"][ok]) * 1000
            ea = np.linalg.norm(fb["joints3d"][ok] - clip["joints3d"][ok], axis=-1).mean(-1) * 1000
            row["fallback_mpjpe_mm"], row["fallback_abs_mm"] = float(e.mean()), float(ea.mean())
            acc["fallback_mpjpe_mm"] += list(e)
            acc["fallback_abs_mm"] += list(ea)
        if row["head_moving"]:
            cam = camera_errors(ann.c2w, clip["c2w"])
            row["rot_deg"] = cam["rot_deg"]
            row["rot_deg_max"] = max(cam["rot_deg"]) if cam["rot_deg"] else None
            row["trans_cm_max"] = max(cam["trans_cm"]) if cam["trans_cm"] else None
            for k in ("rot_deg", "trans_cm", "dir_deg"):
                acc[k] += cam[k]
            if true_masks:
                row["rot_deg_true_masks"] = true_mask_camera(clip, cfg, fps, ann.stats["scale"]["scene_depth_m"])
                acc["rot_deg_true_masks"] += row["rot_deg_true_masks"]
            diag = diagnose_camera(ann, clip["c2w"], cam["rot_deg"])
            if diag is not None:
                row["camera_diagnosis"] = diag
                verdicts[diag["verdict"]] = verdicts.get(diag["verdict"], 0) + 1
        row["odometry"] = ann.stats["odometry"]
        rows.append(row)
    summary = {k: _summary(v) for k, v in acc.items()}
    for k in ("", "_true_masks"):
        rot = np.asarray(acc["rot_deg" + k])
        summary["rot_windows_within_2deg" + k] = float(np.mean(rot <= 2.0)) if rot.size else None
    summary["detection_rate"] = seen / max(expected, 1)
    summary["side_accuracy"] = side_ok / max(side_n, 1)
    summary["noise"] = {"px": noise_px, "m": noise_m}
    summary["camera_verdicts"] = verdicts
    return {"clips": rows, "summary": summary}


def validate_synthetic(out: str | Path, clips: int = 8, frames: int = 33, size: int = 384, seed: int = 4242,
                       head_moving_only: bool = False, arms: bool = False, **kwargs) -> dict:
    """Synthesize (or reuse) ``clips`` world clips in ``out/clips``, validate on them, write ``out/validation.json``.

    ``arms``: the world draws forearms (harder for the camera, easier for MediaPipe; see docs/annotation.md).
    """
    from hand2world.data import ClipDataset
    from hand2world.world import synthesize

    out = Path(out)
    synthesize(out / "clips", clips, frames=frames, size=size, seed=seed, split="test", progress=True, arms=arms)
    ds = ClipDataset(out / "clips")
    idx = [i for i in range(len(ds)) if not head_moving_only or ds.meta(i).get("head_moving")]
    result = validate_clips(ds, idx, **kwargs)
    result["settings"] = {"clips": clips, "frames": frames, "size": size, "seed": seed, "arms": arms}
    (out / "validation.json").write_text(json.dumps(result, indent=2))
    return result
