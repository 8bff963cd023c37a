"""Contact sheet of a clip dataset, for people to look at (``hand2world world preview``).

Design choices:
- One row per clip; for each of a few frames (start, middle, end) four panels side by side:
  RGB | control render | hand masks | depth. The mask panel shows the full hand (``hand_mask``)
  in grey and its visible part (``visible_mask``) in white, so what objects hide is the grey;
  depth uses OpenCV's TURBO colour map over the clip's depth range (near = red, far = blue,
  nothing = black). Each row is labelled with the clip index, action and occlusion ratio.
- Panels are upscaled with nearest-neighbour to at least 128 px so small clips stay legible.
- Works on any dataset in the clip format (synthetic or annotated real video).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from hand2world.data import ClipDataset
from hand2world.io import write_image

log = logging.getLogger(__name__)

__all__ = ["contact_sheet", "write_contact_sheet"]


def _depth_rgb(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    valid = depth > 0
    norm = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = cv2.applyColorMap(((1 - norm) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    rgb[~valid] = 0
    return rgb


def _mask_rgb(full: np.ndarray, visible: np.ndarray) -> np.ndarray:
    g = np.where(visible, 255, np.where(full, 110, 0)).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def contact_sheet(clips: list[dict], frames_per_clip: int = 3, min_panel: int = 128) -> np.ndarray:
    """Build the sheet: uint8 ``[rows * (panel + label), frames * 4 * panel, 3]`` (see module notes)."""
    rows = []
    for clip in clips:
        t_total = clip["video"].shape[0]
        ts = np.linspace(0, t_total - 1, frames_per_clip).round().astype(int)
        valid = clip["depth"][clip["depth"] > 0]
        lo, hi = (np.percentile(valid, 1), np.percentile(valid, 99)) if valid.size else (0.0, 1.0)
        panels = []
        for t in ts:
            panels += [clip["video"][t], clip["control"][t], _mask_rgb(clip["hand_mask"][t], clip["visible_mask"][t]),
                       _depth_rgb(clip["depth"][t], lo, hi)]
        h = panels[0].shape[0]
        scale = max(1, -(-min_panel // h))
        panels = [cv2.resize(p, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for p in panels]
        for k in range(len(panels)):  # thin separators between frames
            if k % 4 == 0 and k:
                panels[k] = panels[k].copy()
                panels[k][:, :2] = 255
        row = np.concatenate(panels, axis=1)
        full = clip["hand_mask"].sum(axis=(1, 2))
        ratio = clip["visible_mask"].sum(axis=(1, 2))[full > 0] / full[full > 0] if (full > 0).any() else [1.0]
        label = np.zeros((22, row.shape[1], 3), np.uint8)
        text = (f"#{clip.get('index', '?')} {clip.get('action', '')}  min visible/full {float(np.min(ratio)):.2f}"
                "   [RGB | control | masks: grey hidden, white visible | depth]")
        cv2.putText(label, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, row], axis=0))
    return np.concatenate(rows, axis=0)


def write_contact_sheet(root: str | os.PathLike, out: str | os.PathLike, clips: int = 6,
                        frames_per_clip: int = 3) -> Path:
    """Write the contact sheet of the first ``clips`` clips of the dataset at ``root`` to ``out`` (PNG/JPEG)."""
    ds = ClipDataset(root, keys=["video", "control", "hand_mask", "visible_mask", "depth"])
    if len(ds) == 0:
        raise ValueError(f"no clips in {root}")
    items = [ds[i] for i in range(min(clips, len(ds)))]
    path = write_image(out, contact_sheet(items, frames_per_clip))
    log.info("contact sheet of %d clips: %s", len(items), path)
    return path
