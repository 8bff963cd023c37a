"""Control-render benchmark: milliseconds per frame on one CPU core (``hand2world bench render``).

Design choices:
- Threads are set by the benchmark runner (``hand2world bench render --threads``, default one
  core); the renderer itself is NumPy (no BLAS calls).
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
import time
from typing import Any

import numpy as np

from hand2world.benchmark import summarize
from hand2world.geometry import intrinsics_from_fov
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
    """Time ``render_control`` (on the threads the caller set).

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
    K = intrinsics_from_fov(60.0, size, size).numpy()
    for _ in range(warmup):
        image = render_control(meshes, K, size, size)
    ms = []
    for _ in range(iters):
        start = time.perf_counter()
        image = render_control(meshes, K, size, size)
        ms.append((time.perf_counter() - start) * 1e3)
    result = {
        **summarize(ms),
        "min_ms": float(min(ms)),
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
