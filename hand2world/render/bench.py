"""Control-render benchmark: milliseconds per frame on one CPU core (``hand2world bench render``).

Design choices:
- One core: ``cv2.setNumThreads(1)`` and ``torch.set_num_threads(1)`` (when torch is already
  imported) for the run, restored afterwards; the renderer itself is NumPy (no BLAS calls).
- Realistic meshes: the open hand model (``HandModel.load("open", side)``) when the hands
  package and its set-up asset are there, posed as an egocentric camera sees two hands;
  otherwise the synthetic hand of ``render.synthetic`` (same vertex/face budget). The
  result says which one was used. Mesh posing happens once, outside the timed loop: the
  number is the cost of ``render_control`` alone.
- Camera: 60 degree horizontal field of view at the requested square size.
- Reports median and 95th percentile of ``iters`` timed frames after a short warm-up.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

import cv2
import numpy as np

from hand2world.render.control import render_control
from hand2world.render.synthetic import SyntheticHand, two_hand_scene

__all__ = ["bench_render", "benchmark_meshes"]

log = logging.getLogger(__name__)

# (side, global_orient axis-angle, wrist position in camera coordinates): two hands reaching forward.
_POSES = (
    ("left", (0.5, 0.0, 0.35), (-0.07, 0.12, 0.42)),
    ("right", (0.4, 0.0, -0.3), (0.06, 0.13, 0.38)),
)


def _open_hand_meshes() -> list[Any]:
    """Two posed open-model hand meshes (torch, batch 1); raises if the model is unavailable."""
    import torch

    from hand2world.hands.model import HandModel, HandPose

    meshes = []
    for side, orient, transl in _POSES:
        model = HandModel.load("open", side)
        pose = HandPose.zeros()
        pose.global_orient = torch.tensor([orient], dtype=pose.global_orient.dtype)
        pose.transl = torch.tensor([transl], dtype=pose.transl.dtype)
        with torch.no_grad():
            meshes.append(model(pose))
    return meshes


def benchmark_meshes(prefer_open: bool = True) -> tuple[list[Any], str]:
    """The two hands the benchmark renders: ``(meshes, "open" | "synthetic")``."""
    if prefer_open:
        try:
            return _open_hand_meshes(), "open"
        except Exception as exc:  # any failure means: no usable open hand model here
            log.info("open hand model unavailable (%s: %s); using the synthetic hand",
                     type(exc).__name__, exc)
    hands: list[SyntheticHand] = two_hand_scene()
    return list(hands), "synthetic"


def bench_render(
    size: int = 256, hands: int = 2, iters: int = 200, warmup: int = 10, prefer_open: bool = True
) -> dict[str, Any]:
    """Time ``render_control`` on one CPU core.

    Args:
        size: square output size in pixels.
        hands: 1 or 2 hands in the frame.
        iters: timed frames; warmup: untimed frames before them.
        prefer_open: use the open hand model when available (else the synthetic hand).

    Returns:
        ``{"median_ms", "p95_ms", "mean_ms", "min_ms", "size", "hands", "iters", "mesh",
        "vertices", "faces", "covered_px"}``.
    """
    if hands not in (1, 2):
        raise ValueError(f"hands must be 1 or 2, got {hands}")
    meshes, kind = benchmark_meshes(prefer_open)
    meshes = meshes[-hands:]
    focal = 0.5 * size / math.tan(math.radians(30.0))
    K = np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])

    torch_mod = sys.modules.get("torch")
    old_cv2, old_torch = cv2.getNumThreads(), (torch_mod.get_num_threads() if torch_mod else None)
    cv2.setNumThreads(1)
    if torch_mod is not None:
        torch_mod.set_num_threads(1)
    try:
        for _ in range(warmup):
            image = render_control(meshes, K, size, size)
        times = np.empty(iters)
        for i in range(iters):
            start = time.perf_counter()
            image = render_control(meshes, K, size, size)
            times[i] = time.perf_counter() - start
    finally:
        cv2.setNumThreads(old_cv2)
        if torch_mod is not None and old_torch is not None:
            torch_mod.set_num_threads(old_torch)
    ms = times * 1e3
    result = {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "size": size,
        "hands": hands,
        "iters": iters,
        "mesh": kind,
        "vertices": [int(np.asarray(m.vertices.shape)[-2]) for m in meshes],
        "faces": [int(np.asarray(m.faces.shape)[0]) for m in meshes],
        "covered_px": int((image.max(axis=-1) > 0).sum()),
    }
    log.info("render_control %dx%d, %d %s hand(s): median %.2f ms, p95 %.2f ms",
             size, size, hands, kind, result["median_ms"], result["p95_ms"])
    return result
