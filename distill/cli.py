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
    import torch.distributed as dist

    from hand2world.distill import DistillRunConfig, run_distill
    from hand2world.train import load_run_config

    cfg = load_run_config(args.config, DistillRunConfig, args.set)
    out = run_distill(cfg, max_steps=args.max_steps)
    losses = out["losses"]
    summary = {"stage": cfg.stage, "steps": len(losses), "start_step": out["start_step"],
               "steps_per_s": round(out["steps_per_s"], 3), "first_loss": losses[0][1] if losses else None,
               "last_loss": losses[-1][1] if losses else None, "run_dir": str(out["run_dir"]),
               "final": str(out["final"]) if out["final"] else None}
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(summary, indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _cmd_recipe(args: argparse.Namespace) -> int:
    from hand2world.distill.recipe import run_recipe

    report = run_recipe(args.preset, clips=args.clips, data=args.data, workers=args.workers, overrides=args.set,
                        stop_after=args.stop_after)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``distill`` and ``recipe``."""
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
