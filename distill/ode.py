"""Stage (a): teacher ODE trajectories, stored as pairs, regressed by the block-causal student.

Design choices:
- Pairs: for a training window (clip, start) the teacher integrates its flow from noise with
  ``ode.teacher_steps`` Euler steps (optional guidance) over the whole window, as it was trained
  (bidirectional, one noise level for all frames). Because ``teacher_steps`` is a multiple of the
  student's steps and both use the same shifted schedule, the trajectory passes exactly through
  the student's noise levels (``student_timesteps``); the states there and the teacher's final
  ``x0`` are kept, for the frames after the scene frame (float16 on disk).
- Storage: ``RUN/pairs/shard_NNNNN.safetensors`` (``xt [n, S, C, T-1, h, w]``, ``x0 [n, C, T-1, h, w]``,
  ``clip [n]``, ``start [n]``) plus ``meta.json``. Only the window's identity is stored, not its
  conditions: a training batch rebuilds them with the teacher's batch code. A shard is written
  atomically, so a killed generation resumes at the first missing shard; a folder made with
  other settings is refused. Under torchrun ranks split the shards, then all read all of them.
- Regression (CausVid-style): the student (the teacher's weights, block-causal mask) sees the
  clean scene frame at t = 0, then each block at one of the student's noise levels drawn
  independently per block (from the stored trajectory); it predicts ``x0 = x_t - t v`` and is
  regressed onto the teacher's ``x0`` (MSE over the frames after the scene).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from hand2world.diffusion import euler_sample, weighted_mse
from hand2world.distill.common import StudentTask, TeacherBundle
from hand2world.distill.config import DistillRunConfig
from hand2world.models import Conditioning
from hand2world.stream.rollout import student_timesteps
from hand2world.train.data import batch_indices, step_generator
from hand2world.train.windows import LatentWindows

log = logging.getLogger(__name__)

__all__ = ["OdeTask", "generate_pairs", "teacher_trajectory"]


@torch.no_grad()
def teacher_trajectory(model: Any, noise: Tensor, cond: Conditioning, teacher_steps: int, keep: int,
                       shift: float = 1.0, guidance_hands: float = 1.0,
                       guidance_camera: float = 1.0) -> tuple[Tensor, Tensor]:
    """Euler-integrate the teacher's flow and keep ``keep`` evenly spaced states.

    Args:
        model: the teacher.
        noise: ``[B, C, T, h, w]``.
        teacher_steps: Euler steps (a multiple of ``keep``).
        keep: states kept: at the schedule's steps ``0, n/keep, 2n/keep, ...`` (``student_timesteps(keep, shift)``).

    Returns:
        ``xt [B, keep, C, T, h, w]`` and the final ``x0 [B, C, T, h, w]``.
    """
    if teacher_steps % keep:
        raise ValueError(f"teacher_steps {teacher_steps} is not a multiple of {keep}")
    every, kept = teacher_steps // keep, []
    x0 = euler_sample(model, noise, cond, steps=teacher_steps, shift=shift, guidance_hands=guidance_hands,
                      guidance_camera=guidance_camera, on_step=lambda i, x: kept.append(x) if i % every == 0 else None)
    return torch.stack(kept, 1), x0


def _pairs_meta(cfg: DistillRunConfig, teacher: TeacherBundle, frames: int) -> dict[str, Any]:
    o = cfg.ode
    return {"teacher": str(teacher.folder.resolve()), "teacher_steps": o.teacher_steps, "steps": cfg.student.steps,
            "shift": cfg.student.shift, "guidance_hands": o.guidance_hands, "guidance_camera": o.guidance_camera,
            "pairs": o.pairs, "shard_size": o.shard_size, "frames": frames, "seed": o.optim.seed}


def generate_pairs(cfg: DistillRunConfig, teacher: TeacherBundle, windows: LatentWindows, folder: Path,
                   rank: int = 0, world: int = 1) -> Path:
    """Sample and store ``cfg.ode.pairs`` teacher trajectories in ``folder`` (resumable; ranks split shards)."""
    import torch.distributed as dist

    o, steps = cfg.ode, cfg.student.steps
    folder.mkdir(parents=True, exist_ok=True)
    meta = _pairs_meta(cfg, teacher, windows.source.frames)
    meta_file = folder / "meta.json"
    if meta_file.is_file():
        old = json.loads(meta_file.read_text())
        if old != meta:
            diff = sorted(k for k in meta if old.get(k) != meta[k])
            raise ValueError(f"{folder} holds pairs made with other settings ({', '.join(diff)}); delete it or "
                             "use another out_dir")
    elif rank == 0:
        meta_file.write_text(json.dumps(meta, indent=1))
    n_shards = math.ceil(o.pairs / o.shard_size)
    mine = [k for k in range(rank, n_shards, world) if not (folder / f"shard_{k:05d}.safetensors").is_file()]
    todo = sum(min(o.shard_size, o.pairs - k * o.shard_size) for k in mine)
    device = next(teacher.model.parameters()).device
    bar = tqdm(total=todo, desc="ode pairs", disable=rank != 0 or todo == 0)
    for k in mine:
        g = torch.Generator().manual_seed(o.optim.seed * 1_000_003 + 7919 * (k + 1))
        first, count = k * o.shard_size, min(o.shard_size, o.pairs - k * o.shard_size)
        out: dict[str, list[Tensor]] = {"xt": [], "x0": [], "clip": [], "start": []}
        for s in range(first, first + count, o.gen_batch):
            idx = [batch_indices(len(windows), 1, o.optim.seed, j, 0, 0, 1, 1)[0]
                   for j in range(s, min(s + o.gen_batch, first + count))]
            starts = windows.starts(idx, g)
            x0, cond = windows.windows(idx, starts)
            noise = torch.randn(x0.shape, generator=g).to(device)
            xt, final = teacher_trajectory(teacher.model, noise, cond, o.teacher_steps, steps, cfg.student.shift,
                                           o.guidance_hands, o.guidance_camera)
            out["xt"].append(xt[:, :, :, 1:].half().cpu())
            out["x0"].append(final[:, :, 1:].half().cpu())
            out["clip"].append(torch.tensor(idx))
            out["start"].append(torch.tensor(starts))
            bar.update(len(idx))
        path = folder / f"shard_{k:05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({key: torch.cat(v).contiguous() for key, v in out.items()}, str(tmp))
        os.replace(tmp, path)
    bar.close()
    if world > 1 and dist.is_initialized():
        dist.barrier()
    return folder


def load_pairs(folder: Path, n: int, shard_size: int) -> dict[str, Tensor]:
    """All stored pairs (``xt``, ``x0`` float16; ``clip``, ``start``)."""
    shards = [load_file(str(folder / f"shard_{k:05d}.safetensors")) for k in range(math.ceil(n / shard_size))]
    return {key: torch.cat([s[key] for s in shards]) for key in ("xt", "x0", "clip", "start")}


class OdeTask(StudentTask):
    """Regression of the block-causal student onto the teacher's ODE trajectories (a ``run_training`` task).

    Args:
        cfg: the distillation config (``stage: ode``).
        dataset: clip dataset (default: from the config / the teacher's data section).
        device: where the models and batches go.
    """

    def __init__(self, cfg: DistillRunConfig, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, dataset, device)
        self.model.gradient_checkpointing = cfg.optim.gradient_checkpointing
        self.levels = torch.tensor(student_timesteps(cfg.student.steps, cfg.student.shift))
        self.pairs: dict[str, Tensor] | None = None
        log.info("ODE student from %s: levels %s, block %d, window %d, sink %d", self.init_folder,
                 [round(float(t), 3) for t in self.levels], self.config.frames_per_block, self.config.cache_window,
                 self.config.cache_sink)

    def prepare(self, run_dir: Path, rank: int = 0, world: int = 1) -> None:
        """Generate (or find) the pairs, load them, and free the teacher."""
        assert self.teacher is not None
        folder = generate_pairs(self.cfg, self.teacher, self.windows, Path(run_dir) / "pairs", rank, world)
        self.pairs = load_pairs(folder, self.cfg.ode.pairs, self.cfg.ode.shard_size)
        self.teacher = None

    def configs(self) -> dict[str, Any]:
        return {"stream": self.cfg.student.stream_config(stochastic=False)}

    def batch(self, step: int, micro: int, rank: int,
              world: int) -> tuple[Tensor, Tensor, Conditioning, Tensor, Tensor]:
        """Student input ``x [B, C, T, h, w]`` (clean scene frame, then trajectory states), per-frame
        ``t [B, T]``, conditions, the teacher's ``x0 [B, C, T-1, h, w]`` and the hand coverage of its
        cells ``[B, T-1, h, w]``."""
        if self.pairs is None:
            raise RuntimeError("call prepare(run_dir) first")
        o, block = self.cfg.optim, self.cfg.student.block
        g = step_generator(o.seed, step, micro, rank)
        idx = torch.tensor(batch_indices(len(self.pairs["clip"]), o.batch_size, o.seed, step, micro, rank, world,
                                         o.grad_accum))
        clean, cond, hands = self.windows.windows_with_hands(self.pairs["clip"][idx].tolist(),
                                                             self.pairs["start"][idx].tolist())
        xt = self.pairs["xt"][idx].float()  # [B, S, C, T-1, h, w]
        b, n_levels, _, n_f = xt.shape[:4]
        level = torch.randint(0, n_levels, (b, n_f // block), generator=g).repeat_interleave(block, 1)  # [B, T-1]
        noisy = xt.permute(0, 3, 1, 2, 4, 5)[torch.arange(b)[:, None], torch.arange(n_f)[None], level]
        noisy = noisy.permute(0, 2, 1, 3, 4).to(self.device)  # [B, C, T-1, h, w]
        t = torch.cat([torch.zeros(b, 1), self.levels[level]], 1).to(self.device)
        x = torch.cat([clean[:, :, :1], noisy], 2)
        return x, t, cond, self.pairs["x0"][idx].float().to(self.device), hands[:, 1:]

    def loss(self, model: Any, step: int, micro: int, rank: int, world: int) -> Tensor:
        x, t, cond, target, hands = self.batch(step, micro, rank, world)
        v = model(x, t, cond, causal=True)
        pred = x[:, :, 1:] - t[:, None, 1:, None, None] * v[:, :, 1:].to(x.dtype)
        w = self.cfg.ode.hand_loss_weight
        return weighted_mse(pred, target, 1.0 + w * hands if w else None)
