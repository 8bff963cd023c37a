"""`hand2world bench stream`.

``bench stream`` times ``StreamingGenerator.step`` (one call = one block) end to end: FPS, step
latency p50/p95, peak memory and a stage breakdown (encode, denoise, commit, decode), printed as
a text table on the log and as JSON. Without ``--weights`` the model has random weights (speed
does not depend on them): ``DIT_PRESETS[--preset]`` at ``--size`` with ``--block`` latent frames
per block and a per-frame conv autoencoder (a ``wan-1.3b``-shaped student is benchmarked with a
16-channel per-frame autoencoder: the Wan VAE's temporal factor is not streamable here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 128x128, got {text!r}") from exc
    return h, w


def build_bench_generator(args: argparse.Namespace) -> Any:
    """The generator a ``bench stream`` invocation describes (random weights unless ``--weights``)."""
    import torch

    from hand2world.checkpoints import random_student
    from hand2world.models.config import AUTOENCODER_PRESETS, DIT_PRESETS, StreamConfig
    from hand2world.stream import StreamingGenerator

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    opts = dict(dtype=dtype, compile=args.compile, attention="auto" if args.device.startswith("cuda") else None,
                profile=True)
    h, w = args.size or (None, None)
    if args.weights:
        gen = StreamingGenerator.from_pretrained(args.weights, args.device, steps=args.steps, height=h, width=w,
                                                 **opts)
        if args.block and args.block != gen.config.frames_per_block:
            raise SystemExit(f"--block {args.block} differs from the weights' frames_per_block "
                             f"{gen.config.frames_per_block}; leave --block out with --weights")
        return gen
    cfg = DIT_PRESETS[args.preset]
    ae_name = args.autoencoder or ("tiny" if cfg.latent_channels == 8 else "small")
    cfg = dataclasses.replace(cfg, vae_factor=AUTOENCODER_PRESETS[ae_name].spatial_factor)
    if h is None:
        h, w = (n * cfg.vae_factor for n in cfg.latent_size)
    if h % cfg.vae_factor or w % cfg.vae_factor:
        raise SystemExit(f"--size must be a multiple of {cfg.vae_factor}")
    cfg = dataclasses.replace(cfg, latent_size=(h // cfg.vae_factor, w // cfg.vae_factor),
                              frames_per_block=args.block or cfg.frames_per_block, vae_temporal_factor=1)
    model, ae = random_student(cfg, ae_name)
    stream = StreamConfig(steps=args.steps or 4, stochastic=True)
    return StreamingGenerator(model.to(args.device), ae, stream, **opts)


def _inputs(gen: Any, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene, ``n`` control frames with a moving blob (the encoder runs every frame) and a panning camera."""
    rng = np.random.default_rng(seed)
    h, w = gen.height, gen.width
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1).astype(np.uint8)
    scene = np.clip(scene + rng.integers(0, 20, scene.shape), 0, 255).astype(np.uint8)
    control = np.zeros((n, h, w, 3), np.uint8)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        cy, cx = h // 2 + int(h / 5 * np.sin(i / 7)), w // 2 + int(w / 5 * np.cos(i / 9))
        r = max(2, min(h, w) // 8)
        control[i, max(0, cy - r):cy + r, max(0, cx - r):cx + r] = (255, 140, 30)
        a = 0.2 * np.sin(i / 20)
        c2w[i, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    return scene, control, c2w


def bench_stream(args: argparse.Namespace) -> dict:
    """Time ``--frames`` generated frames after ``--warmup`` steps."""
    import torch

    from hand2world.benchmark import summarize

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    rss0 = _rss_mb()
    gen = build_bench_generator(args)
    fpb = gen.config.frames_per_block
    steps_n = max(1, args.frames // fpb)
    warm = args.warmup
    scene, control, c2w = _inputs(gen, (steps_n + warm) * fpb)
    gen.start(scene)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = _rss_mb()
    ms, cpu_ms, stages = [], [], {k: [] for k in ("encode", "denoise", "commit", "decode")}
    wall0 = 0.0
    for i in range(steps_n + warm):
        if i == warm:
            wall0 = time.perf_counter()
        t0, c0 = time.perf_counter(), time.process_time()
        gen.step(control[i * fpb:(i + 1) * fpb], c2w[i * fpb:(i + 1) * fpb])
        if cuda:
            torch.cuda.synchronize()
        if i >= warm:
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu_ms.append((time.process_time() - c0) * 1e3)
            for k in stages:
                stages[k].append(gen.timings[k])
    wall = time.perf_counter() - wall0
    frames = steps_n * fpb
    lat = summarize(ms)
    memory = ({"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if cuda else
              {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "rss_before_model_mb": round(rss0, 1), "rss_growth_during_stream_mb": round(_rss_mb() - rss_start, 1)})
    cfg = gen.config
    result = {
        "what": f"StreamingGenerator.step, {'random' if not args.weights else args.weights} weights, preset "
                f"{args.preset if not args.weights else 'from weights'}, {gen.height}x{gen.width}, block {fpb}, "
                f"{gen.stream.steps} steps, {args.device} {args.dtype}{' compiled' if args.compile else ''}",
        "fps": round(frames / wall, 2), "frames": frames, "steps_timed": steps_n, "warmup_steps": warm,
        "step_p50_ms": round(lat["median_ms"], 2), "step_p95_ms": round(lat["p95_ms"], 2),
        "step_mean_ms": round(lat["mean_ms"], 2),
        # CPU time this process spent per step (all its threads): on a machine shared with other jobs the
        # wall-clock numbers above include waiting for a core; with --threads 1 this is the step's latency
        # on an idle core
        "step_cpu_p50_ms": round(float(np.median(cpu_ms)), 2), "load_average_1m": round(os.getloadavg()[0], 2),
        "stages_median_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
        "memory": {**memory, "kv_cache_mb": round(gen.memory()["kv_cache_bytes"] / 2**20, 2)},
        "model": {"parameters_m": round(sum(p.numel() for p in gen.model.parameters()) / 1e6, 2),
                  "layers": cfg.num_layers, "dim": cfg.dim, "latent_hw": list(gen.latent_hw),
                  "cache_window": cfg.cache_window, "cache_sink": cfg.cache_sink},
    }
    st = result["stages_median_ms"]
    log.info("bench stream: %s\n  FPS %.2f | step p50 %.1f ms, p95 %.1f ms (CPU %.1f ms) | encode %.1f, "
             "denoise %.1f, commit %.1f, decode %.1f ms | memory %s", result["what"], result["fps"],
             result["step_p50_ms"], result["step_p95_ms"], result["step_cpu_p50_ms"], st["encode"], st["denoise"],
             st["commit"], st["decode"], json.dumps(result["memory"]))
    return result


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench stream``."""
    from hand2world.benchmark import add_benchmark

    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("--preset", default="tiny", help="DiT preset (random weights) when no --weights")
        p.add_argument("--size", type=_parse_size, default=None,
                       help="HxW output resolution (default: the preset's or the weights' own)")
        p.add_argument("--steps", type=int, default=None,
                       help="denoising steps per block (default: 4, or the weights' stream.json)")
        p.add_argument("--block", type=int, default=None, help="latent frames per block (default: the preset's)")
        p.add_argument("--weights", default=None, help="a student folder/name instead of random weights")
        p.add_argument("--autoencoder", default=None,
                       help="autoencoder preset of the random student (e.g. composite: x16, decoded over the warped "
                            "photo); default tiny (8 latent channels) or small")
        p.add_argument("--frames", type=int, default=100, help="frames timed")
        p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
        p.add_argument("--device", default="cpu", help="cpu | cuda")
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        p.add_argument("--compile", action="store_true", help="torch.compile the DiT")

    add_benchmark(bench, "stream", "StreamingGenerator.step: FPS, step p50/p95, peak memory, stage breakdown",
                  bench_stream, configure, threads=2)
