"""Per-video QA of an annotation: numbers (JSON), the trajectory as a PNG, a side-by-side MP4.

Design choices:
- Detection rate counts frames where MediaPipe saw at least one hand (before cleaning); the
  rate after cleaning (interpolated frames included) is reported beside it.
- Landmark jitter is the median magnitude of the second temporal difference of the image
  landmarks (pixels of the input video), over joints and over frames with three consecutive
  observations of the same hand: zero for constant-velocity motion, so it measures shake, not
  motion. Reported for the raw MediaPipe landmarks and the cleaned ones.
- Reprojection error: median pixel distance (input resolution) between the fitted mesh's
  joints projected with ``K`` and the cleaned image landmarks the fit saw; per frame the
  median over the 21 joints, then median / p95 over hand-frames.
- Speed: per-frame medians of each stage; ``per_frame_fps`` counts decode + track + fit/render
  (the per-frame stages), the trajectory (visual odometry) is reported separately.
- Plots use matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from hand2world.geometry import rotation_angle_deg
from hand2world.io import VideoWriter

log = logging.getLogger(__name__)

__all__ = ["landmark_jitter", "summarize", "write_report"]

PER_FRAME_STAGES = ("decode", "track", "fit+render")


def landmark_jitter(image_px: np.ndarray, valid: np.ndarray) -> float:
    """Median |x[t+1] - 2 x[t] + x[t-1]| of ``image_px [T, 2, 21, 2]`` where ``valid [T, 2]`` holds at t-1, t, t+1."""
    ok = valid[:-2] & valid[1:-1] & valid[2:]
    if not ok.any():
        return float("nan")
    acc = np.linalg.norm(image_px[2:] - 2 * image_px[1:-1] + image_px[:-2], axis=-1)  # [T-2, 2, 21]
    return float(np.median(acc[ok]))


def _stats(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": float("nan"), "p95": float("nan"), "n": 0}
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "n": int(x.size)}


def summarize(ann) -> dict:
    """The QA numbers of an ``Annotation`` (see module docstring)."""
    W, H = ann.input_size
    px = np.array([W, H], np.float32)
    T = len(ann.frames)
    times = {k: float(np.median(v)) if v else 0.0 for k, v in ann.timings.items()}
    per_frame = sum(times[k] for k in PER_FRAME_STAGES if k in times)
    rel = ann.c2w
    return {
        "frames": T,
        "input_size": [W, H],
        "detection_rate": float(ann.raw.valid.any(1).mean()),
        "detection_rate_clean": float(ann.clean.valid.any(1).mean()),
        "frames_per_side": {"left": int(ann.clean.valid[:, 0].sum()), "right": int(ann.clean.valid[:, 1].sum())},
        "jitter_px": {"raw": landmark_jitter(ann.raw.image * px, ann.raw.valid),
                      "clean": landmark_jitter(ann.clean.image * px, ann.clean.valid)},
        "reprojection_px": _stats(ann.reproj_px),
        "median_ms": times,
        "per_frame_fps": 1000.0 / per_frame if per_frame > 0 else None,
        "trajectory_ms_per_frame": times.get("trajectory"),
        "trajectory": {"total_rotation_deg": float(rotation_angle_deg(rel[-1, :3, :3])),
                       "path_length_m": float(np.linalg.norm(np.diff(rel[:, :3, 3], axis=0), axis=1).sum())},
        **ann.stats,
    }


def plot_trajectory(c2w: np.ndarray, fps: float, path: Path, title: str = "") -> Path:
    """PNG: camera path seen from above (x-z) and from the side (z-y), and rotation angles over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hand2world.geometry import matrix_to_axis_angle

    pos = c2w[:, :3, 3]
    rotvec = np.degrees(matrix_to_axis_angle(torch.from_numpy(c2w[:, :3, :3].astype(np.float64))).numpy())
    t = np.arange(len(c2w)) / fps
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    ax[0].plot(pos[:, 0] * 100, pos[:, 2] * 100, "-", lw=1.5)
    ax[0].plot(pos[0, 0] * 100, pos[0, 2] * 100, "go", label="start")
    ax[0].plot(pos[-1, 0] * 100, pos[-1, 2] * 100, "rs", label="end")
    ax[0].set(xlabel="x (cm, right)", ylabel="z (cm, forward)", title="camera path, top view")
    ax[0].axis("equal")
    ax[0].legend()
    ax[1].plot(pos[:, 2] * 100, -pos[:, 1] * 100, "-", lw=1.5)
    ax[1].set(xlabel="z (cm, forward)", ylabel="-y (cm, up)", title="side view")
    ax[1].axis("equal")
    for k, name in enumerate(("x (pitch)", "y (yaw)", "z (roll)")):
        ax[2].plot(t, rotvec[:, k], label=name)
    ax[2].set(xlabel="time (s)", ylabel="rotation vs first frame (deg)", title="camera rotation")
    ax[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_side_by_side(ann, path: Path) -> Path:
    """MP4: input (with the cleaned landmarks drawn) | control render, at clip resolution."""
    from hand2world.hands.skeleton import SIDES
    from hand2world.render import render_landmarks

    h, w = ann.frames.shape[1:3]
    size = np.array([w, h], np.float32)
    with VideoWriter(path, fps=ann.fps) as writer:
        for t in range(len(ann.frames)):
            sides = [SIDES[s] for s in range(2) if ann.clean.valid[t, s]]
            pts = [ann.clean.image[t, SIDES.index(s)] * size for s in sides]
            left = render_landmarks(ann.frames[t], pts, sides) if sides else ann.frames[t].copy()
            panel = np.concatenate([left, ann.control[t]], axis=1)
            cv2.putText(panel, f"{t}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            writer.write(panel)
    return path


def write_report(ann, summary: dict, folder: str | Path) -> dict:
    """Write ``report.json``, ``trajectory.png`` and ``side_by_side.mp4`` into ``folder``; returns the summary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {**summary, "files": {
        "trajectory_png": str(plot_trajectory(ann.c2w, ann.fps, folder / "trajectory.png", summary.get("video", ""))),
        "side_by_side_mp4": str(write_side_by_side(ann, folder / "side_by_side.mp4")),
    }}
    np.save(folder / "c2w.npy", ann.c2w)
    (folder / "report.json").write_text(json.dumps(summary, indent=2, default=float))
    log.info("QA report: %s", folder / "report.json")
    return summary
