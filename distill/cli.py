"""`hand2world distill` (one stage of teacher -> student distillation) and `hand2world recipe` (the whole
recipe). Registered through ``hand2world.cli.COMMAND_MODULES``; heavy imports happen inside the commands.
``distill`` runs alone or under ``torchrun --nproc_per_node N -m hand2world.cli distill ...``.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

__all__ = ["register"]


def _cmd_distill(args: argparse.Namespace) -> int:
    from hand2world.distill import DistillRunConfig, run_distill
    from hand2world.train import load_run_config
    from hand2world.train.trainer import print_summary

    cfg = load_run_config(args.config, DistillRunConfig, args.set)
    out = run_distill(cfg, max_steps=args.max_steps)
    losses = out["losses"]
    summary = {"stage": cfg.stage, "steps": len(losses), "start_step": out["start_step"],
               "steps_per_s": round(out["steps_per_s"], 3), "first_loss": losses[0][1] if losses else None,
               "last_loss": losses[-1][1] if losses else None, "run_dir": str(out["run_dir"]),
               "final": str(out["final"]) if out["final"] else None}
    print_summary(summary)
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from hand2world.distill.recipe import run_recipe

    report = run_recipe(args.preset, clips=args.clips, data=args.data, workers=args.workers, overrides=args.set,
                        stop_after=args.stop_after)
    print(json.dumps(report, indent=2))
    return 0


def _bench_distill(args: argparse.Namespace) -> dict:
    """Step cost of a distillation stage with a real teacher (no checkpoints, nothing written)."""
    import time

    import torch

    from hand2world.benchmark import summarize
    from hand2world.distill import DistillRunConfig
    from hand2world.train import load_run_config

    sets = [f"stage={args.stage}", f"teacher={args.teacher}", f"init={args.teacher}", *args.set]
    cfg = load_run_config(args.config, DistillRunConfig, sets)
    out: dict = {}
    if args.stage == "ode":
        from hand2world.distill.ode import OdeTask, teacher_trajectory

        task = OdeTask(cfg)
        o = cfg.ode
        idx = list(range(min(o.gen_batch, len(task.windows))))
        x0, cond = task.windows.windows(idx, [0] * len(idx))
        t0 = time.perf_counter()
        teacher_trajectory(task.teacher.model, torch.randn_like(x0), cond, o.teacher_steps, cfg.student.steps,
                           cfg.student.shift, o.guidance_hands, o.guidance_camera)
        out["pair_s"] = round((time.perf_counter() - t0) / len(idx), 3)
        n, (c, n_t, h, w) = 16, x0.shape[1:]
        task.pairs = {"xt": torch.randn(n, cfg.student.steps, c, n_t - 1, h, w).half(),
                      "x0": torch.randn(n, c, n_t - 1, h, w).half(),
                      "clip": torch.arange(n) % len(task.windows), "start": torch.zeros(n, dtype=torch.long)}
    else:
        from hand2world.distill.dmd import DmdTask

        task = DmdTask(cfg)
        task.setup()
    model = task.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    ms = []
    for step in range(args.iters + 2):  # 2 warm-up steps (latent caching)
        t0 = time.perf_counter()
        task.loss(model, step, 0, 0, 1).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ms.append((time.perf_counter() - t0) * 1000)
    stats = summarize(ms[2:])
    return {"what": f"distill {args.stage} step, batch {cfg.optim.batch_size} x {task.data.frames} frames, "
                    f"student steps {cfg.student.steps}, block {cfg.student.block}",
            "steps_per_s": round(1000 / stats["median_ms"], 3), **out, **stats}


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``distill``, ``recipe`` and ``bench distill``."""
    from hand2world.benchmark import add_benchmark

    p = sub.add_parser("distill", help="distil the teacher into a causal few-step student (stage ode | dmd)")
    p.add_argument("--config", help="YAML run config (configs/distill_tiny.yaml); defaults when absent")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stage=dmd --set dmd.optim.steps=100 (repeatable)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (resumable)")
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("recipe", help="the whole recipe: world synth -> autoencoder -> teacher -> distill ode -> dmd")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--clips", type=int, default=None, help="synthetic clips (default: the preset's)")
    p.add_argument("--data", default=None, help="dataset folder (default: the preset's, under outputs/)")
    p.add_argument("--workers", type=int, default=2, help="world synth processes")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override one stage's config, e.g. --set teacher.optim.steps=100 (repeatable)")
    p.add_argument("--stop-after", default=None, choices=["world", "autoencoder", "teacher", "ode", "dmd"])
    p.set_defaults(func=_cmd_recipe)

    def conf(q: argparse.ArgumentParser) -> None:
        q.add_argument("--stage", choices=["ode", "dmd"], default="ode")
        q.add_argument("--config", default="configs/distill_tiny.yaml")
        q.add_argument("--teacher", default="teacher_tiny", help="teacher run or folder (also the student's init)")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        q.add_argument("--iters", type=int, default=5)

    add_benchmark(bench, "distill", "distillation step cost (ODE pairs + regression, or DMD) with a real teacher",
                  _bench_distill, conf, threads=1)
