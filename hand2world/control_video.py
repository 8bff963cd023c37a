"""`hand2world control`: the gesture-to-conditioning path, end to end, on a video file.

Reads a video, tracks hands with MediaPipe (video mode), fits hand meshes, renders the
control image and the Plücker-ray map, and writes a side-by-side MP4:
``input | landmarks | control render | Plücker rays``, plus a JSON of per-stage timings.
The rays panel shows the camera trajectory relative to its first pose (``relative_c2w``), as
the frame sources make them; a static camera (no trajectory) gives one constant panel.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from hand2world.conditioning import ControlConfig, ControlPipeline
from hand2world.geometry import plucker_rays, plucker_to_rgb, relative_c2w
from hand2world.io import VideoWriter, iter_frames, video_info
from hand2world.render import render_landmarks
from hand2world.tracking import HandTracker

log = logging.getLogger(__name__)

PANEL_TITLES = ("input", "landmarks", "control render", "Plucker rays")


def _label(img: np.ndarray, text: str) -> np.ndarray:
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def panel_size(width: int, height: int, panel_height: int) -> tuple[int, int]:
    """(width, height) of one panel keeping the input aspect, both even."""
    w = int(round(width * panel_height / height / 2)) * 2
    return w, panel_height // 2 * 2


def run_control_video(video: str | Path, out: str | Path, panel_height: int = 256, fov_deg: float = 60.0,
                      mirrored: bool = False, c2w: np.ndarray | None = None, max_frames: int | None = None,
                      kind: str = "open", mano_dir: str | None = None) -> dict:
    """Run tracking -> fit -> control render -> Plücker rays over a video; write the side-by-side MP4.

    Args:
        video: input video path (``.mp4``, ``.mp4.gz``, anything PyAV reads).
        out: output MP4 path; a ``.json`` with timings is written beside it.
        panel_height: height of each of the four panels (width keeps the input aspect).
        fov_deg: assumed horizontal field of view of the input camera.
        mirrored: the input is a mirrored selfie view (flips MediaPipe's handedness accordingly).
        c2w: optional camera trajectory [T, 4, 4] (camera-to-world); static camera when absent.
        max_frames: stop after this many frames.
    Returns:
        Statistics: frames, frames with a hand, detection rate, median ms per stage, FPS.
    """
    info = video_info(video)
    w, h = panel_size(info["width"], info["height"], panel_height)
    total = info["frames"] if max_frames is None else min(info["frames"] or max_frames, max_frames)
    pipeline = ControlPipeline(ControlConfig(height=h, width=w, fov_deg=fov_deg, kind=kind), mano_dir=mano_dir)
    K = torch.from_numpy(pipeline.K)
    rel = None if c2w is None else relative_c2w(torch.from_numpy(np.asarray(c2w, np.float32)))
    static_rays = plucker_to_rgb(plucker_rays(K, torch.eye(4), h, w)) if rel is None else None
    times: dict[str, list[float]] = {"track": [], "fit+render": [], "compose+encode": []}
    frames = with_hand = 0
    fps = info["fps"] or 30.0
    t_start = time.perf_counter()
    with HandTracker(mode="video", mirrored=mirrored) as tracker, VideoWriter(out, fps=fps) as writer:
        for i, rgb in enumerate(tqdm(iter_frames(video, max_frames), total=total or None, desc="control",
                                     unit="frame")):
            t0 = time.perf_counter()
            hands = tracker.detect(rgb, timestamp_ms=int(round(i * 1000 / fps)))
            t1 = time.perf_counter()
            cond = pipeline.process(hands, t=i / fps)
            t2 = time.perf_counter()
            small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            sides = list(cond.landmarks_px)
            marked = render_landmarks(small.copy(), [cond.landmarks_px[s] for s in sides], sides)
            if rel is None:
                rays = static_rays.copy()
            else:
                rays = plucker_to_rgb(plucker_rays(K, rel[min(i, len(rel) - 1)], h, w))
            panels = [small.copy(), marked, cond.control.copy(), rays]
            writer.write(np.concatenate([_label(p, t) for p, t in zip(panels, PANEL_TITLES, strict=True)], axis=1))
            t3 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[key].append(dt * 1000)
            frames += 1
            with_hand += bool(hands)
    wall = time.perf_counter() - t_start
    stats = {
        "video": str(video), "out": str(out), "frames": frames, "frames_with_hand": with_hand,
        "detection_rate": with_hand / max(frames, 1), "panel": [w, h],
        "median_ms": {k: float(np.median(v)) if v else None for k, v in times.items()},
        "fps": frames / wall if wall > 0 else None, "config": asdict(pipeline.config),
    }
    Path(out).with_suffix(".json").write_text(json.dumps(stats, indent=2))
    log.info("control: %d frames, hand in %.1f%%, %.1f FPS end to end; median ms %s", frames,
             100 * stats["detection_rate"], stats["fps"] or 0, stats["median_ms"])
    return stats
