"""Realism of a clip dataset, judged by MediaPipe's hand landmarker (``hand2world world realism``).

Rules:
- The judge is ``tracking.hands_found``: image mode, each frame upscaled to a 512 px short side
  before detection, as every rate this project reports.
- The rate is over the frames where a hand is visible in the ground truth: ``visible_mask``
  covers at least ``min_fraction`` of the frame (default 0.5 %, as eval's hand frames:
  ``tracking.visible_hand_frames``); frames without a visible hand are not counted.
- Per resolution: the dataset's frames are first downscaled (``INTER_AREA``) to each requested
  size (never upscaled past the data), so one dataset answers "how real does it look at 256
  and at 128 px". The same frames and the same judge at every size.
- Breakdowns by skin tone (``meta["skin_tone"]`` in thirds, light to dark), by whether the
  clip's head moves, and by framing: "inside" frames have every joint of every present hand
  inside the image (``joints2d``), "cut" frames a hand crossing the image border.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["realism"]


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def realism(root: str | os.PathLike, clips: int | None = None, sizes: tuple[int, ...] = (256, 128),
            min_fraction: float = 0.005, tracker: Any = None) -> dict:
    """MediaPipe's detection rate on a dataset's own ground-truth frames (see module rules).

    Args:
        root: dataset folder; clips: the first ``clips`` clips (default all); sizes: resolutions (px).
        min_fraction: visible hand share of the frame that makes a frame count.
        tracker: an image-mode ``HandTracker`` to reuse (default: one made and closed here).

    Returns:
        ``{"clips", "hand_frames", "frames", "inside_frames", "rates": {size: rate}, "by_tone": {size: {third:
        rate}}, "by_head": {size: {"still"|"moving": rate}}, "by_framing": {size: {"inside"|"cut": rate}},
        "data_size", "style"}``; a rate is None without frames.
    """
    from hand2world.data import ClipDataset
    from hand2world.tracking import HandTracker, detection_rate, hands_found, visible_hand_frames

    ds = ClipDataset(root, keys=["video", "visible_mask", "joints2d"])
    n = len(ds) if clips is None else min(clips, len(ds))
    own = tracker is None
    tracker = tracker or HandTracker(mode="image")
    found: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    tones, heads, inside = [], [], []
    data_size, total, style = 0, 0, None
    try:
        for i in range(n):
            c, meta = ds[i], ds.meta(i)
            data_size = c["video"].shape[1]
            total += len(c["video"])
            style = meta.get("style", 1)
            where = visible_hand_frames(c, int(min_fraction * c["video"].shape[1] * c["video"].shape[2]))
            frames = c["video"][where]
            if not len(frames):
                continue
            for s in sizes:
                found[s].append(hands_found(_resize(frames, min(s, data_size)), tracker=tracker))
            tone = meta.get("skin_tone")
            tones.append(np.full(int(where.sum()), -1 if tone is None else min(int(3 * tone), 2)))
            heads.append(np.full(int(where.sum()), bool(meta.get("head_moving", False))))
            j = c["joints2d"][where]  # [t, 2, 21, 2]; NaN: hand absent
            h, w = c["video"].shape[1:3]
            ok = (j[..., 0] >= 0) & (j[..., 0] < w) & (j[..., 1] >= 0) & (j[..., 1] < h)
            present = np.isfinite(j).all(-1)
            inside.append((ok | ~present).all(axis=(1, 2)))
    finally:
        if own:
            tracker.close()
    tone_of = np.concatenate(tones) if tones else np.zeros(0, int)
    head_of = np.concatenate(heads) if heads else np.zeros(0, bool)
    inside_of = np.concatenate(inside) if inside else np.zeros(0, bool)
    out: dict[str, Any] = {"clips": n, "frames": total, "hand_frames": int(len(tone_of)), "data_size": data_size,
                           "style": style, "rates": {}, "by_tone": {}, "by_head": {}, "by_framing": {},
                           "inside_frames": int(inside_of.sum())}
    for s in sizes:
        f = np.concatenate(found[s]) if found[s] else np.zeros(0, bool)
        out["rates"][s] = detection_rate(f)
        if (tone_of >= 0).any():
            out["by_tone"][s] = {name: detection_rate(f, tone_of == k) for k, name in
                                 enumerate(("light", "medium", "dark"))}
        out["by_head"][s] = {"still": detection_rate(f, ~head_of), "moving": detection_rate(f, head_of)}
        out["by_framing"][s] = {"inside": detection_rate(f, inside_of), "cut": detection_rate(f, ~inside_of)}
        log.info("realism %s at %d px: %s of %d frames with a visible hand", root, s, out["rates"][s], len(f))
    return out
