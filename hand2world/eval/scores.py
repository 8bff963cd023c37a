"""Scores of generated clips: per clip, aggregated over clips, over long rollouts, and paired between models.

Rules:
- Metrics are computed on the generated frames ``1 .. T-1`` against the true ones (frame 0 is the
  given scene), from the primitives of ``hand2world.eval.metrics`` (definitions in docs/eval.md).
- Clips at another resolution than a model's are centre-cropped/resized to it (``K`` adjusted,
  masks nearest-neighbour), as ``generate`` does (``prepare_clip``).
- Camera error's noise floor is the same estimator on the true frames (the ``GT_NAME`` row).
- PSNRs are capped at ``metrics.PSNR_CAP``; a metric a clip cannot have (no occluded pixels, a
  failed estimate) is None and left out of the means, with ``n_<key>`` counting the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from hand2world.eval import metrics as M
from hand2world.geometry import rotation_angle_deg
from hand2world.io import fit_square
from hand2world.tracking import visible_hand_frames

__all__ = ["CLIP_KEYS", "GT_NAME", "LOWER_IS_BETTER", "PAIRED_KEYS", "SCALARS", "WARP_DEPTH", "aggregate",
           "aggregate_long", "camera_errors", "clip_metrics", "detection_metrics", "long_metrics", "paired_differences",
           "prepare_clip", "warp_photo"]


GT_NAME = "ground truth"


CLIP_KEYS = ("video", "control", "K", "c2w", "hand_mask", "visible_mask", "scene")

#: the plane of the warped-photo reference (the composite decoder's and the DiT's scene warp)
WARP_DEPTH = 0.5


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    t, h, w = masks.shape
    if (h, w) == (size, size):
        return masks
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.stack([cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
                     [y0:y0 + size, x0:x0 + size] for m in masks]) > 0


def warp_photo(scene: np.ndarray, c2w: np.ndarray, K: np.ndarray, depth: float = WARP_DEPTH) -> np.ndarray:
    """uint8 ``[T, S, S, 3]``: the scene photo warped into each frame's camera through the plane ``z = depth``
    of the first camera (``models.composite.warp_image``): the geometric prior alone."""
    import torch

    from hand2world.geometry import relative_c2w
    from hand2world.models.composite import warp_image

    img = torch.from_numpy(np.ascontiguousarray(scene)).permute(2, 0, 1)[None].float()
    rel = relative_c2w(torch.from_numpy(np.asarray(c2w, np.float32)))[None]
    out = warp_image(img, torch.from_numpy(np.asarray(K, np.float32)), rel, depth)
    return out[0].permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def prepare_clip(clip: dict[str, Any], size: int | None) -> dict[str, Any]:
    """Clip arrays at ``size`` x ``size`` (unchanged when None or equal), with ``scene`` (the clip's scene photo,
    frame 0 where it has none: ``data.scene_image``) and ``warped`` (that photo warped into every frame)."""
    from hand2world.data import scene_image

    out = {k: clip[k] for k in CLIP_KEYS if k in clip}
    out["scene"] = scene_image(clip)
    out["c2w"] = np.asarray(out["c2w"], np.float32)
    out["K"] = np.asarray(out["K"], np.float32)
    if size is not None and clip["video"].shape[1:3] != (size, size):
        out["video"], K = fit_square(clip["video"], size, out["K"])
        out["control"] = fit_square(clip["control"], size, out["K"])[0]
        out["scene"] = fit_square(out["scene"][None], size, out["K"])[0][0]
        out["K"] = K
        out["hand_mask"] = _resize_masks(clip["hand_mask"], size)
        out["visible_mask"] = _resize_masks(clip["visible_mask"], size)
    out["warped"] = warp_photo(out["scene"], out["c2w"], out["K"])
    return out


def _cap(x: float) -> float:
    return float(min(x, M.PSNR_CAP))


def camera_errors(frames: np.ndarray, clip: dict[str, Any], mask: np.ndarray, max_pairs: int = 16) -> dict:
    """Rotation error (°) of pairs (0, i) estimated on ``frames`` vs the clip's ``c2w``.

    Pairs use up to ``max_pairs`` frames ``i`` evenly spread over ``1 .. T-1``. A failed estimate
    counts as the identity (error = the true rotation's angle).
    """
    t = len(frames)
    idx = np.unique(np.linspace(1, t - 1, min(max_pairs, t - 1)).round().astype(int)) if t > 1 else []
    errs, fails, true, ok = [], 0, [], []
    for i in idx:
        est = M.estimate_rotation(frames[0], frames[i], clip["K"], mask[0], mask[i])
        R_gt = M.gt_relative_rotation(clip["c2w"][0], clip["c2w"][i])
        errs.append(rotation_angle_deg(est.R @ R_gt.T))
        true.append(rotation_angle_deg(R_gt))
        fails += not est.ok
        if est.ok:
            ok.append(errs[-1])
    n = len(errs)
    return {"camera_err_deg": float(np.mean(errs)) if n else None,
            "camera_fail_rate": fails / n if n else None,
            "camera_err_ok_deg": float(np.mean(ok)) if ok else None,
            "true_rotation_deg": float(np.mean(true)) if n else None}


def detection_metrics(frames: np.ndarray, clip: dict[str, Any], tracker: Any) -> dict:
    """``hands_found``: the share of frames ``1 .. T-1`` with a visible true hand in which MediaPipe finds a hand
    in ``frames`` (None when no frame shows one); ``hand_frames`` counts them."""
    from hand2world.tracking import detection_rate, hands_found

    where = visible_hand_frames(clip)[1:]
    found = hands_found(frames[1:][where], tracker=tracker) if where.any() else np.zeros(0, bool)
    return {"hands_found": detection_rate(found), "hand_frames": int(where.sum())}


def clip_metrics(frames: np.ndarray, clip: dict[str, Any], dilate: int, lpips_model: Any = None) -> dict:
    """All per-clip metrics of generated ``frames [T, S, S, 3]`` (frame 0 = scene) against ``clip``.

    Returns a dict with scalars (``psnr``, ``ssim``, ``hand_psnr``, ``occluded_psnr``,
    ``occluded_pixels``, ``bg_ssim`` (SSIM against the warped photo outside the dilated true hands:
    how much of the photo's own detail is kept), ``flicker``, ``camera_err_deg``, ``camera_fail_rate``,
    ``lpips``) and the per-frame PSNR curve ``psnr_frames`` (frames 1..T-1).
    """
    gt, gen = clip["video"], np.asarray(frames)
    if gen.shape != gt.shape:
        raise ValueError(f"generated frames {gen.shape} vs ground truth {gt.shape}")
    hand = M.dilate_masks(clip["hand_mask"], dilate)
    occluded = clip["hand_mask"] & ~clip["visible_mask"]
    p = M.psnr_frames(gen[1:], gt[1:])
    out: dict[str, Any] = {
        "psnr": float(np.mean(np.minimum(p, M.PSNR_CAP))),
        "ssim": float(np.mean(M.ssim_frames(gen[1:], gt[1:]))),
        "hand_psnr": M.region_psnr(gen[1:], gt[1:], hand[1:]),
        "occluded_psnr": M.region_psnr(gen[1:], gt[1:], occluded[1:]),
        "occluded_pixels": int(occluded[1:].sum()),
        "bg_ssim": float(np.nanmean([M.ssim(gen[t], clip["warped"][t], mask=~hand[t]) for t in range(1, len(gen))])),
        "flicker": M.flicker(gen, gt, hand),
        **camera_errors(gen, clip, hand),
        "psnr_frames": [_cap(x) for x in p],
    }
    for key in ("hand_psnr", "occluded_psnr"):
        if out[key] is not None:
            out[key] = _cap(out[key])
    if lpips_model is not None:
        out["lpips"] = float(lpips_model.frames(gen[1:], gt[1:]).mean())
    return out


SCALARS = ("psnr", "ssim", "hand_psnr", "occluded_psnr", "bg_ssim", "hands_found", "camera_err_deg",
           "camera_fail_rate", "camera_err_ok_deg", "flicker", "lpips")


def aggregate(per_clip: list[dict]) -> dict:
    """Mean over clips of each scalar (clips where it is None are left out; ``n_<key>`` counts the rest)."""
    out: dict[str, Any] = {}
    for key in SCALARS + ("true_rotation_deg",):
        vals = [c[key] for c in per_clip if c.get(key) is not None]
        if any(key in c for c in per_clip):
            out[key] = float(np.mean(vals)) if vals else None
            out[f"n_{key}"] = len(vals)
    return out


def long_metrics(frames: np.ndarray, gt: np.ndarray, lengths: Sequence[int]) -> dict:
    """Long-rollout metrics of ``frames`` (frame 0 = scene) against ``gt``, both ``[1 + max(lengths), ...]``.

    Segments are ``seg = min(lengths)`` generated frames long (1-81, 82-162, ...). Returns per-frame
    PSNR, per-segment mean PSNR and frame statistics (generated and true), mean PSNR up to each
    length, and the collapse indicator (see docs/eval.md).
    """
    seg = min(lengths)
    total = max(lengths)
    p = np.minimum(M.psnr_frames(frames[1:total + 1], gt[1:total + 1]), M.PSNR_CAP)
    segments = []
    for s in range(0, total, seg):
        g, t = frames[1 + s:1 + s + seg], gt[1 + s:1 + s + seg]
        sg, st = M.frame_stats(g), M.frame_stats(t)
        segments.append({"frames": [s + 1, s + len(g)], "psnr": float(p[s:s + seg].mean()), "stats": sg,
                         "gt_stats": st,
                         "contrast_ratio": sg["std"] / max(st["std"], 1e-6),
                         "sharpness_ratio": sg["sharpness"] / max(st["sharpness"], 1e-6)})
    first, last = segments[0], segments[-1]
    drop = first["psnr"] - last["psnr"]
    contrast_drift = last["contrast_ratio"] / max(first["contrast_ratio"], 1e-6)
    sharp_drift = last["sharpness_ratio"] / max(first["sharpness_ratio"], 1e-6)
    collapsed = bool(drop > 3.0 or not 0.5 <= contrast_drift <= 2.0 or not 0.5 <= sharp_drift <= 2.0)
    return {"psnr_frames": [float(x) for x in p], "segments": segments,
            "psnr_by_length": {str(n): float(p[:n].mean()) for n in lengths},
            "psnr_drop_db": float(drop), "contrast_drift": float(contrast_drift),
            "sharpness_drift": float(sharp_drift), "collapsed": collapsed}


def aggregate_long(per_clip: list[dict], lengths: Sequence[int]) -> dict:
    """Mean over long clips (curves, segment PSNR, drifts); ``collapsed`` if any clip collapsed."""
    n_seg = len(per_clip[0]["segments"])
    segs = [float(np.mean([c["segments"][k]["psnr"] for c in per_clip])) for k in range(n_seg)]
    return {
        "clips": len(per_clip),
        "segment_frames": [c["frames"] for c in per_clip[0]["segments"]],
        "segment_psnr": segs,
        "psnr_by_length": {str(n): float(np.mean([c["psnr_by_length"][str(n)] for c in per_clip])) for n in lengths},
        "psnr_drop_db": segs[0] - segs[-1],
        "contrast_drift": float(np.mean([c["contrast_drift"] for c in per_clip])),
        "sharpness_drift": float(np.mean([c["sharpness_drift"] for c in per_clip])),
        "collapsed": any(c["collapsed"] for c in per_clip),
        "psnr_frames": np.mean([c["psnr_frames"] for c in per_clip], axis=0).tolist(),
    }


PAIRED_KEYS = ("occluded_psnr", "hand_psnr", "psnr", "bg_ssim", "camera_err_deg")


LOWER_IS_BETTER = frozenset({"camera_err_deg", "flicker", "lpips"})


def paired_differences(result: dict, keys: Sequence[str] = PAIRED_KEYS) -> dict:
    """Per-clip paired comparison of every other teacher/student against the first one in ``result``.

    Ablations differ by fractions of a dB, below the spread between clips, so the same clips are compared
    model against model. Returns ``{reference, models: {name: {key: {mean, se, n, better}}}}``: the mean
    per-clip difference signed so that positive = the reference is better (reference minus model for PSNR,
    model minus reference for errors such as ``camera_err_deg``), its standard error, the clips where both
    have the metric and how many the reference wins; empty without two such models.
    """
    names = [k for k, m in result["models"].items() if m["kind"] in ("teacher", "student")]
    if len(names) < 2:
        return {}
    ref = result["models"][names[0]]["per_clip"]
    out: dict[str, Any] = {"reference": names[0], "models": {}}
    for name in names[1:]:
        other = result["models"][name]["per_clip"]
        row = {}
        for key in keys:
            sign = -1.0 if key in LOWER_IS_BETTER else 1.0
            d = np.array([sign * (a[key] - b[key]) for a, b in zip(ref, other, strict=True)
                          if a.get(key) is not None and b.get(key) is not None], np.float64)
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            row[key] = {"mean": float(d.mean()) if len(d) else None, "se": se, "n": int(len(d)),
                        "better": int((d > 0).sum())}
        out["models"][name] = row
    return out
