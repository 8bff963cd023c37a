"""hand2world.train: the training loop (DDP / FSDP via torchrun, EMA, exact resume), teacher and autoencoder jobs.

``train_teacher(cfg)`` and ``train_autoencoder(cfg)`` run a validated run config
(``load_run_config(path, TeacherRunConfig | AutoencoderRunConfig)``) to completion.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hand2world.train.config import (
    AutoencoderRunConfig,
    DataConfig,
    OptimConfig,
    TeacherRunConfig,
    load_run_config,
)
from hand2world.train.trainer import EMA, run_training, setup_distributed

log = logging.getLogger(__name__)

__all__ = [
    "EMA",
    "AutoencoderRunConfig",
    "DataConfig",
    "OptimConfig",
    "TeacherRunConfig",
    "load_run_config",
    "resolve_run_dir",
    "run_training",
    "setup_distributed",
    "train_autoencoder",
    "train_teacher",
]


def resolve_run_dir(out_dir: str) -> Path:
    """Absolute run folder: relative names live under ``hand2world.paths.runs_dir()``."""
    from hand2world.paths import runs_dir

    p = Path(out_dir).expanduser()
    return p if p.is_absolute() or p.parts[:1] == (".",) else runs_dir() / p


def train_teacher(cfg: TeacherRunConfig, dataset: Any = None, max_steps: int | None = None) -> dict[str, Any]:
    """Train the DiT (bidirectional teacher, or block-causal with ``cfg.causal``)."""
    from hand2world.train.config import to_dict
    from hand2world.train.teacher import TeacherTask

    info = setup_distributed()
    task = TeacherTask(cfg, dataset=dataset, device=info.device)
    return run_training(task, cfg.optim, resolve_run_dir(cfg.out_dir), to_dict(cfg), info, max_steps=max_steps)


def train_autoencoder(cfg: AutoencoderRunConfig, dataset: Any = None, max_steps: int | None = None) -> dict[str, Any]:
    """Train the per-frame conv autoencoder; its release gets latent statistics."""
    from hand2world.train.autoencoder import AutoencoderTask, finalize_autoencoder
    from hand2world.train.config import to_dict

    info = setup_distributed()
    task = AutoencoderTask(cfg, dataset=dataset, device=info.device)
    out = run_training(task, cfg.optim, resolve_run_dir(cfg.out_dir), to_dict(cfg), info, max_steps=max_steps)
    if out["final"] is not None:
        out.update(finalize_autoencoder(task, out["final"]))
        log.info("autoencoder release %s: PSNR %.2f dB", out["final"], out["psnr_db"])
    return out
