"""`hand2world bench ...`: speed benchmarks (medians and p95, never timed tests).

- ``render``: control render of two hands per frame on ``--threads`` CPU threads.
- ``fit``: streaming landmark fit (warm-started, one hand per call) on poses of the open model.
- ``control``: the whole `control` path on the real cup video (tracking, fit + render, compose).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def summarize(ms: list[float]) -> dict:
    """Median / p95 / mean of a list of milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean()),
            "n": int(a.size)}


def _set_threads(n: int) -> None:
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def bench_fit(iters: int = 100, seed: int = 0) -> dict:
    """Warm-started single-hand fit latency over a smooth random pose sequence."""
    from hand2world.geometry import intrinsics_from_fov, project
    from hand2world.hands import HandModel, HandPose, fit_landmarks

    model = HandModel.load("open", side="right")
    K = torch.as_tensor(intrinsics_from_fov(60.0, 256, 256), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    pose = HandPose.zeros(1)
    pose.transl[:] = torch.tensor([0.0, 0.0, 0.5])
    ms, init = [], None
    for _ in range(iters):
        pose.hand_pose[:] = (pose.hand_pose + 0.05 * torch.randn(pose.hand_pose.shape, generator=gen)).clamp(-1, 1)
        pose.global_orient[:] = pose.global_orient + 0.03 * torch.randn(3, generator=gen)
        with torch.no_grad():
            joints = model(pose).joints
        world = joints - joints.mean(dim=1, keepdim=True)
        image = project(joints, K)
        t0 = time.perf_counter()
        init = fit_landmarks(model, world, image, K, init=init).detach()
        ms.append((time.perf_counter() - t0) * 1000)
    return {"what": "fit (warm-started, 1 hand, default iterations)", **summarize(ms[1:])}


def run_bench(what: str, args: argparse.Namespace) -> dict:
    """Dispatch one benchmark; returns a JSON-able dict (also printed by the CLI)."""
    _set_threads(args.threads)
    result: dict = {"threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__}
    if what == "render":
        from hand2world.render.bench import bench_render

        result.update(bench_render(size=args.size, hands=2, iters=args.iters))
    elif what == "fit":
        result.update(bench_fit(iters=min(args.iters, 200)))
    elif what == "control":
        from hand2world.control_video import run_control_video
        from hand2world.paths import asset_path

        with tempfile.TemporaryDirectory() as tmp:
            stats = run_control_video(asset_path("cup.mp4"), Path(tmp) / "bench.mp4", panel_height=args.size)
        result.update({k: stats[k] for k in ("frames", "detection_rate", "fps", "median_ms", "panel")})
    else:
        raise ValueError(f"unknown benchmark {what!r}")
    return result
