"""`hand2world train autoencoder|teacher` and the video-model benchmarks.

Registered through ``hand2world.cli.COMMAND_MODULES``; heavy imports happen inside the commands.
The same ``train`` command runs alone or under ``torchrun --nproc_per_node N`` (DDP / FSDP).
"""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def _cmd_train(args: argparse.Namespace) -> int:
    from hand2world.train import (
        AutoencoderRunConfig,
        TeacherRunConfig,
        load_run_config,
        train_autoencoder,
        train_teacher,
    )

    if args.what == "teacher":
        cfg = load_run_config(args.config, TeacherRunConfig, args.set)
        out = train_teacher(cfg, max_steps=args.max_steps)
    else:
        cfg = load_run_config(args.config, AutoencoderRunConfig, args.set)
        out = train_autoencoder(cfg, max_steps=args.max_steps)
    losses = out["losses"]
    summary = {"steps": len(losses), "start_step": out["start_step"], "steps_per_s": round(out["steps_per_s"], 3),
               "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None,
               "final": str(out["final"]) if out["final"] else None}
    if "psnr_db" in out:
        summary["psnr_db"] = round(out["psnr_db"], 2)
    from hand2world.train.trainer import print_summary

    print_summary(summary)
    return 0


def _bench_train(args: argparse.Namespace) -> dict:
    """Optimiser steps/s of the teacher on procedural clips (no checkpoints)."""
    import tempfile

    from hand2world.train import TeacherRunConfig, train_teacher
    from hand2world.train.config import from_dict

    with tempfile.TemporaryDirectory() as tmp:
        cfg = from_dict(TeacherRunConfig, {
            "model": {"preset": args.preset}, "autoencoder": f"preset:{args.autoencoder}",
            "data": {"procedural_clips": 8, "frames": args.frames, "size": args.size},
            "optim": {"steps": args.iters + 2, "batch_size": args.batch, "ckpt_every": 10**9, "log_every": 10**9,
                      "threads": args.threads},
            "out_dir": tmp})
        task_warm = train_teacher(cfg, max_steps=2)  # warm-up + latent caching
        t0 = time.perf_counter()
        out = train_teacher(cfg, max_steps=args.iters + 2)
        wall = time.perf_counter() - t0
    return {"what": f"teacher train step, preset {args.preset}, batch {args.batch} x {args.frames} frames "
                    f"@ {args.size}px", "steps_per_s": round(out["steps_per_s"], 3), "wall_s": round(wall, 2),
            "warmup_steps": len(task_warm["losses"]), "iters": args.iters}


def _bench_dit_step(args: argparse.Namespace) -> dict:
    """Latency of one cached block-causal DiT forward (a streaming denoising step) at a full window."""
    import torch

    from hand2world.benchmark import summarize
    from hand2world.models import DIT_PRESETS, Conditioning, DiT, scene_channels

    cfg = DIT_PRESETS[args.preset]
    model = DiT(cfg).eval()
    h, w = cfg.latent_size
    c, s = cfg.latent_channels, cfg.vae_factor
    cache = model.new_kv_cache(1)
    fpb = cfg.frames_per_block
    x = torch.randn(1, c, fpb, h, w)
    cond = Conditioning(control=torch.randn_like(x), scene=scene_channels(torch.zeros(1, c, h, w), fpb) * 0,
                        rays=torch.randn(1, 6, fpb, h * s, w * s))
    ms = []
    with torch.inference_mode():
        while cache.frames + fpb <= cache.capacity_frames - fpb:  # fill the window
            model(x, torch.zeros(1), cond, kv_cache=cache, commit=True)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(x, torch.full((1,), 0.5), cond, kv_cache=cache)
            ms.append((time.perf_counter() - t0) * 1000)
    return {"what": f"cached DiT block forward, preset {args.preset}, context {cache.frames} frames",
            **summarize(ms[2:])}


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``train`` and the ``bench train`` / ``bench dit-step`` benchmarks."""
    from hand2world.benchmark import add_benchmark

    p = sub.add_parser("train", help="train the autoencoder or the video teacher (torchrun-ready)")
    p.add_argument("what", choices=["autoencoder", "teacher"])
    p.add_argument("--config", help="YAML run config (configs/*.yaml); defaults when absent")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.steps=100 (repeatable)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (resumable)")
    p.set_defaults(func=_cmd_train)

    def conf_train(q: argparse.ArgumentParser) -> None:
        q.add_argument("--preset", default="tiny")
        q.add_argument("--autoencoder", default="tiny", help="autoencoder preset (untrained; speed only)")
        q.add_argument("--batch", type=int, default=4)
        q.add_argument("--frames", type=int, default=9)
        q.add_argument("--size", type=int, default=128)
        q.add_argument("--iters", type=int, default=10)

    add_benchmark(bench, "train", "teacher training steps/s (procedural clips)", _bench_train, conf_train, threads=2)

    def conf_step(q: argparse.ArgumentParser) -> None:
        q.add_argument("--preset", default="tiny")
        q.add_argument("--iters", type=int, default=50)

    add_benchmark(bench, "dit-step", "one cached block-causal DiT forward (streaming step)", _bench_dit_step,
                  conf_step, threads=2)
