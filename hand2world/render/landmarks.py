"""21-point hand skeleton overlays (MediaPipe order) for visualisation panels.

Design choices:
- The bone list is MediaPipe's ``HAND_CONNECTIONS`` (wrist 0; thumb 1-4, index 5-8, middle
  9-12, ring 13-16, pinky 17-20; palm closed by 5-9-13-17 and 0-17).
- Side colours from ``colors.SIDE_COLORS``: bones in the fill colour, joints as light discs
  ringed with the wire colour, so the skeleton reads on bright and dark images alike.
- Anti-aliased, sub-pixel (``shift=4``) drawing; line width and joint size scale with the
  image (a panel, not a model input). Non-finite points (a missing joint) are skipped.
- Never modifies the input: returns a new image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from hand2world.render.colors import side_colors
from hand2world.render.control import as_numpy

__all__ = ["HAND_BONES", "render_landmarks"]

HAND_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (17, 18), (18, 19), (19, 20), (0, 17),
)  # fmt: skip

_SHIFT = 4


def render_landmarks(
    rgb: Any,
    hands_2d: Sequence[Any] | Any,
    sides: Sequence[str],
    *,
    normalized: bool = False,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw hand skeletons over an image.

    Args:
        rgb: ``uint8 [H, W, 3]`` image (torch or NumPy); not modified.
        hands_2d: per hand ``[21, >=2]`` points (x right, y down); pixels, or MediaPipe's
            normalised image coordinates with ``normalized=True``. A list or a ``[N, 21, >=2]`` array.
        sides: per hand "left" | "right" (same length as ``hands_2d``).
        normalized: scale x by W and y by H first.
        thickness: bone width in pixels (default ~1/150 of the image's smaller side, at least 1).

    Returns:
        ``uint8 [H, W, 3]``: a copy of ``rgb`` with the skeletons drawn.
    """
    image = np.ascontiguousarray(as_numpy(rgb), dtype=np.uint8).copy()
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb must be [H, W, 3], got {image.shape}")
    if len(hands_2d) != len(sides):
        raise ValueError(f"{len(hands_2d)} hands but {len(sides)} sides")
    height, width = image.shape[:2]
    if thickness is None:
        thickness = max(1, round(min(height, width) / 150))
    radius = thickness + 1
    scale = float(1 << _SHIFT)
    for points, side in zip(hands_2d, sides, strict=True):
        colors = side_colors(side)
        pts = as_numpy(points, np.float64)
        if pts.shape[0] != 21 or pts.shape[-1] < 2:
            raise ValueError(f"each hand needs [21, >=2] points, got {pts.shape}")
        xy = pts[:, :2] * ([width, height] if normalized else [1.0, 1.0])
        ok = np.isfinite(xy).all(axis=1)
        fixed = np.rint(np.where(ok[:, None], xy, 0.0) * scale).astype(np.int64)
        fixed = np.clip(fixed, -(1 << 26), 1 << 26)
        for a, b in HAND_BONES:
            if ok[a] and ok[b]:
                cv2.line(image, tuple(map(int, fixed[a])), tuple(map(int, fixed[b])), colors.fill, thickness,
                         cv2.LINE_AA, _SHIFT)
        for i in np.flatnonzero(ok):
            centre = tuple(map(int, fixed[i]))
            cv2.circle(image, centre, int(radius * scale), colors.joint, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(image, centre, int(radius * scale), colors.wire, 1, cv2.LINE_AA, _SHIFT)
    return image
