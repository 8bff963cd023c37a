"""The foundation's benchmarks (``hand2world bench render|fit|control``), registered by ``hand2world.cli``.

The plumbing (``add_benchmark``, ``summarize``) is ``hand2world.benchmark``. Built in:
- ``render``: control render of two hands per frame.
- ``fit``: streaming landmark fit (warm-started, one hand per call) on poses of the open model.
- ``control``: the whole `control` path on the real cup video (tracking, fit + render, compose).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from hand2world.benchmark import add_benchmark, summarize

log = logging.getLogger(__name__)


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


def _bench_control(args: argparse.Namespace) -> dict:
    from hand2world.control_video import run_control_video
    from hand2world.paths import asset_path

    with tempfile.TemporaryDirectory() as tmp:
        stats = run_control_video(asset_path("cup.mp4"), Path(tmp) / "bench.mp4", panel_height=args.size)
    return {k: stats[k] for k in ("frames", "detection_rate", "fps", "median_ms", "panel")}


def register_builtin(bench: argparse._SubParsersAction) -> None:
    """The foundation's benchmarks: render, fit, control."""
    from hand2world.render.bench import bench_render

    def sized(default: int, iters: int | None = None) -> Callable[[argparse.ArgumentParser], None]:
        def configure(p: argparse.ArgumentParser) -> None:
            p.add_argument("--size", type=int, default=default, help="frame (render) or panel (control) height")
            if iters is not None:
                p.add_argument("--iters", type=int, default=iters)
        return configure

    add_benchmark(bench, "render", "control render, two hands per frame",
                  lambda a: bench_render(size=a.size, hands=2, iters=a.iters), sized(256, 200))
    add_benchmark(bench, "fit", "warm-started streaming hand fit",
                  lambda a: bench_fit(iters=a.iters), lambda p: p.add_argument("--iters", type=int, default=100))
    add_benchmark(bench, "control", "the `control` path on the real cup video", _bench_control, sized(256), threads=2)
