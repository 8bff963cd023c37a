"""Pieces both distillation stages share: loading the teacher, the student's initial weights, the
clip windows (the teacher's batch code), guided velocities.

Design choices:
- A teacher checkpoint is self-contained (DiT config + weights + its autoencoder + run config),
  so the teacher, its latent space and (by default) its data come from one folder, read by the
  one model-folder loader (``load_video_model``; a step checkpoint gives its EMA weights).
- Batches come from ``hand2world.train.windows.LatentWindows``, the one batch code of the video
  model: the same windows, scene latents, rays and latent cache as teacher training.
- ``StudentTask`` is the base of both stages' tasks: it declares and builds what they share
  (teacher, windows, student); each stage adds its own state in its own constructor.
- Guidance combines branches exactly as ``diffusion.flow.euler_sample`` does (independent
  hands / camera drops); a branch runs only when its scale differs from 1.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hand2world.checkpoints import autoencoder_extra, load_video_model, resolve_model_folder
from hand2world.models import DiT, DiTConfig
from hand2world.train.config import DataConfig, from_dict
from hand2world.train.data import ClipSource, open_dataset
from hand2world.train.trainer import Task
from hand2world.train.windows import LatentWindows

log = logging.getLogger(__name__)

__all__ = ["StudentTask", "TeacherBundle", "load_dit_weights", "load_teacher", "make_windows"]


@dataclasses.dataclass
class TeacherBundle:
    """A loaded teacher: frozen DiT, its autoencoder, its folder and run config."""

    model: DiT
    ae: nn.Module
    folder: Path
    run_config: dict[str, Any]


def load_dit_weights(spec: str, device: torch.device | str = "cpu") -> tuple[DiT, Path]:
    """A DiT from a release or step checkpoint (EMA weights when the folder has them), through the shared
    model-folder loader (``hand2world.checkpoints.load_video_model``)."""
    folder = resolve_model_folder(spec)
    model = load_video_model(folder, device)[0]
    return model, folder


def load_teacher(spec: str, device: torch.device | str = "cpu") -> TeacherBundle:
    """The frozen teacher of a distillation (eval mode, no gradients) with its autoencoder and run config."""
    folder = resolve_model_folder(spec)
    model, ae, _, run_config = load_video_model(folder, device)
    log.info("teacher %s (%d layers, dim %d)", folder, model.config.num_layers, model.config.dim)
    return TeacherBundle(model.eval().requires_grad_(False), ae, folder, run_config)


def make_windows(teacher: TeacherBundle, data: DataConfig | None, dataset: Any = None,
                 device: torch.device | str = "cpu") -> tuple[LatentWindows, DataConfig]:
    """The clip windows of a distillation (``data=None``: the teacher's data section)."""
    if data is None:
        data = from_dict(DataConfig, teacher.run_config.get("data", {}), "teacher data")
    size = teacher.model.config.latent_size[0] * teacher.model.config.vae_factor
    if data.size != size:
        raise ValueError(f"data.size {data.size} differs from the teacher's resolution {size}")
    control_input = teacher.model.config.control_input
    source = ClipSource(dataset if dataset is not None else open_dataset(data, control_input), data.size, data.frames)
    return LatentWindows(source, teacher.ae, teacher.model.config, torch.device(device)), data


class StudentTask(Task):
    """The set-up both distillation stages share, declared once: device, the frozen teacher and its
    autoencoder, the clip windows (``windows``, ``data``), the student's config and the student
    (``model``) initialised from ``cfg.student_init()`` (``init_folder``: where those weights came from).

    Args:
        cfg: the distillation config.
        dataset: clip dataset (default: from the config / the teacher's data section).
        device: where the models and batches go.
    """

    def __init__(self, cfg: Any, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.teacher: TeacherBundle | None = load_teacher(cfg.teacher, self.device)
        self.ae: nn.Module = self.teacher.ae
        self.windows, self.data = make_windows(self.teacher, cfg.data, dataset, self.device)
        self.config: DiTConfig = cfg.student.dit_config(self.teacher.model.config)
        if (self.data.frames - 1) % cfg.student.block:
            raise ValueError(f"data.frames - 1 = {self.data.frames - 1} is not a multiple of student.block")
        init, self.init_folder = load_dit_weights(cfg.student_init(), "cpu")
        self.model = DiT(self.config)
        self.model.load_state_dict(init.state_dict())

    def extra(self) -> dict[str, tuple[dict[str, Tensor], Any]]:
        return autoencoder_extra(self.ae)
