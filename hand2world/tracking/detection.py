"""MediaPipe's hand landmarker as a judge of realism: does it find a hand in a frame?

Rules:
- Frames are upscaled (bilinear) so their short side is ``upscale`` pixels before detection: the
  landmarker's palm detector misses hands that span a few dozen pixels, and every rate this project
  reports (world ground truth, generated frames, real footage) is measured the same way.
- Image mode (each frame alone, deterministic): a rate says how often a single frame looks like a
  hand, not how well a tracker follows one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from hand2world.tracking.tracker import HandTracker

__all__ = ["detection_rate", "hands_found", "visible_hand_frames"]


def hands_found(frames: Iterable[np.ndarray], upscale: int = 512, tracker: HandTracker | None = None) -> np.ndarray:
    """Per frame, whether MediaPipe finds at least one hand.

    Args:
        frames: uint8 RGB frames ``[H, W, 3]`` (or one ``[T, H, W, 3]`` array).
        upscale: short side in pixels the frames are resized to first (0 = as given).
        tracker: an image-mode ``HandTracker`` to reuse (default: one made and closed here).

    Returns:
        bool ``[T]``.
    """
    own = tracker is None
    tracker = tracker or HandTracker(mode="image")
    try:
        out = []
        for rgb in frames:
            rgb = np.ascontiguousarray(rgb)
            if upscale and min(rgb.shape[:2]) != upscale:
                s = upscale / min(rgb.shape[:2])
                rgb = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)),
                                 interpolation=cv2.INTER_LINEAR)
            out.append(bool(tracker.detect(rgb)))
        return np.asarray(out, bool)
    finally:
        if own:
            tracker.close()


def detection_rate(found: np.ndarray, where: np.ndarray | None = None) -> float | None:
    """Share of frames with a hand found, over the frames ``where`` says have one (None when there are none)."""
    found = np.asarray(found, bool)
    sel = found if where is None else found[np.asarray(where, bool)]
    return float(sel.mean()) if sel.size else None


def visible_hand_frames(clip: dict[str, Any], min_pixels: int | None = None) -> np.ndarray:
    """bool ``[T]``: frames whose true visible hand (``clip["visible_mask"] [T, H, W]``) covers at least
    ``min_pixels`` (default: 0.5 % of the frame), the frames where a hand detector should find one."""
    vis = clip["visible_mask"]
    n = min_pixels if min_pixels is not None else int(0.005 * vis.shape[1] * vis.shape[2])
    return vis.reshape(len(vis), -1).sum(1) >= max(n, 1)
