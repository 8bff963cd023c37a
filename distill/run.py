"""``run_distill``: one stage of the distillation through the shared training loop.

Design choices: the stage's task (``OdeTask`` / ``DmdTask``) goes to
``hand2world.train.trainer.run_training`` unchanged, so distillation gets the teacher's
torchrun (DDP / FSDP), EMA, atomic checkpoints, exact resume, ``metrics.jsonl`` and loss plots;
the release ``final/`` holds the EMA student (``model.safetensors`` + ``config.json``), the
autoencoder, ``run.json`` and ``stream.json``.
"""

from __future__ import annotations

import logging
from typing import Any

from hand2world.distill.config import DistillRunConfig

log = logging.getLogger(__name__)

__all__ = ["run_distill"]


def run_distill(cfg: DistillRunConfig, dataset: Any = None, max_steps: int | None = None) -> dict[str, Any]:
    """Run ``cfg.stage`` to ``optim.steps`` (resuming from the run's latest checkpoint).

    Returns:
        ``run_training``'s summary (``losses``, ``steps_per_s``, ``final``, ``start_step``) plus ``run_dir``.
    """
    from hand2world.train import resolve_run_dir, run_training, setup_distributed
    from hand2world.train.config import to_dict

    info = setup_distributed()
    if cfg.optim.threads:  # before the ODE pairs are sampled (run_training sets it again)
        import torch

        torch.set_num_threads(cfg.optim.threads)
    run_dir = resolve_run_dir(cfg.run_dir_name())
    if cfg.stage == "ode":
        from hand2world.distill.ode import OdeTask

        task: Any = OdeTask(cfg, dataset=dataset, device=info.device)
        task.prepare(run_dir, info.rank, info.world)
    else:
        from hand2world.distill.dmd import DmdTask

        task = DmdTask(cfg, dataset=dataset, device=info.device)
    out = run_training(task, cfg.optim, run_dir, to_dict(cfg), info, max_steps=max_steps)
    out["run_dir"] = run_dir
    if out["final"] is not None:
        log.info("student release (%s stage): %s", cfg.stage, out["final"])
    return out
