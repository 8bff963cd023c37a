"""The one training loop: distributed set-up, precision, accumulation, EMA, checkpoints, logging.

Design choices:
- A job is a ``Task`` (the trainable module, a loss for one micro-batch, the configs to save);
  this loop owns everything else, so the autoencoder and the teacher (and later the student)
  share the same resume, DDP/FSDP, EMA and checkpoint code.
- The same command runs on one CPU and under ``torchrun``: with ``WORLD_SIZE > 1`` a process
  group starts (NCCL on GPUs, gloo on CPU); ``parallel=auto`` uses DDP, ``fsdp`` shards with
  FSDP2 (``fully_shard`` per transformer block, then the root).
- State dicts go through ``torch.distributed.checkpoint.state_dict`` (full, CPU-offloaded), which
  is the same call for a plain module, DDP and FSDP; rank 0 writes.
- bf16 autocast on CUDA (``precision=auto``); float32 master weights and EMA.
- Exact resume: model, EMA, AdamW state and the step come back; data, noise and timesteps
  derive from (seed, step, micro, rank).
- Optional task hooks are methods of ``Task`` with no-op defaults (a job overrides what it
  needs), e.g. for jobs with more than one trained module (DMD: the student is the task's
  ``model``, its critic is the task's own): ``setup(info, wrap)`` (after the model is wrapped;
  ``wrap`` wraps another module the same way), ``state_dict() -> (tensors, meta) | None`` /
  ``load_state_dict(tensors, meta)`` (saved with every checkpoint, restored on resume),
  ``metrics() -> {name: float}`` (extra columns of ``metrics.jsonl``; keys ending in ``loss``
  are plotted), ``configs() -> {name: config}`` (``NAME.json`` in checkpoints and the release,
  e.g. a student's ``stream.json``), ``extra()`` (weights stored beside the model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from hand2world.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint, write_release
from hand2world.train.config import OptimConfig

log = logging.getLogger(__name__)

__all__ = ["EMA", "DistInfo", "Task", "finish_distributed", "load_module_state", "module_state", "print_summary",
           "run_training", "setup_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Start the process group under torchrun (gloo on CPU, NCCL on CUDA); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world=world, local_rank=local, device=device)


def print_summary(summary: dict[str, Any]) -> None:
    """Print a job's JSON summary once (rank 0), then end the process group when there is one.

    Every rank waits at a barrier first: a rank that destroyed the group while rank 0 was still
    writing the release left gloo's threads running and aborted at exit ("terminate called without
    an active exception", a torchrun failure after a finished run).
    """
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(json.dumps(summary, indent=2))
    finish_distributed()


def finish_distributed() -> None:
    """Barrier, then destroy the process group (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    """Exponential moving average of a module's parameters (float32, same sharding as the params)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}

    def decay_at(self, step: int | None) -> float:
        """The decay used after optimiser step ``step`` (0-based): warmed up as ``(1 + s) / (10 + s)``,
        capped at ``decay``, so a short run's average is not dominated by the initial weights
        (0.999 kept 37 % of the random init after 1,000 steps). ``None``: the constant decay."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        d = self.decay_at(step)
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    def state_dict(self) -> dict[str, Tensor]:
        return {n: _full(t).cpu() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for n, t in self.shadow.items():
            src = state[n].to(t.device, torch.float32)
            if hasattr(t, "device_mesh"):
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src, t.device_mesh, t.placements)
            t.copy_(src)


class Task:
    """A training job for ``run_training``: a subclass sets ``model`` and ``config`` and defines ``loss``;
    the other methods are optional hooks whose defaults do nothing."""

    model: nn.Module  # trainable module (unwrapped)
    config: Any  # architecture config saved as config.json

    def loss(self, model: Callable[..., Tensor], step: int, micro: int, rank: int, world: int) -> Tensor:
        """Loss of one micro-batch (``model`` is the possibly wrapped module); every task defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define loss (abstract in Task)")

    def extra(self) -> dict[str, tuple[dict[str, Tensor], Any]]:
        """Additional weights + configs stored with every checkpoint (e.g. the autoencoder)."""
        return {}

    def configs(self) -> dict[str, Any]:
        """Configs written as ``NAME.json`` beside the weights (e.g. a student's ``stream.json``)."""
        return {}

    def setup(self, info: DistInfo, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Called once the model is wrapped, before a resume; ``wrap`` wraps another module the same way."""

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The task's own state (tensors, JSON-able meta) saved with every checkpoint; None: it has none."""
        return None

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (on resume)."""

    def metrics(self) -> dict[str, float]:
        """Extra columns of ``metrics.jsonl`` after each step."""
        return {}


def _wrap(model: nn.Module, info: DistInfo, parallel: str) -> nn.Module:
    if info.world == 1 or parallel == "none":
        return model
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world,))
        for block in getattr(model, "blocks", []):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def module_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Full, CPU-offloaded (model, optimiser) state dicts; the same call for plain, DDP and FSDP modules
    (collective under FSDP: every rank calls it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, opt, options=opts)


def load_module_state(model: nn.Module, opt: torch.optim.Optimizer, msd: dict, osd: dict) -> None:
    """Inverse of ``module_state``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd,
                   options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))


def plot_losses(metrics_file: Path, out_png: Path, title: str = "") -> None:
    """Loss curves (raw + smoothed) from ``metrics.jsonl``: ``loss`` and any other ``*loss`` column
    (e.g. a DMD run's ``critic_loss``), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = ["loss"] + sorted({k for r in rows for k in r if k.endswith("loss") and k != "loss"})
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 3.5), dpi=100, squeeze=False)
    for key, ax in zip(keys, axes[0], strict=True):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if not pts:
            continue
        steps, loss = zip(*pts, strict=True)
        smooth, acc = [], loss[0]
        for v in loss:
            acc = 0.9 * acc + 0.1 * v
            smooth.append(acc)
        ax.plot(steps, loss, alpha=0.35, label=key)
        ax.plot(steps, smooth, label="smoothed")
        if min(loss) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{title} {key}" if len(keys) > 1 else title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def _resume(run_dir: Path, raw: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None, task: Task) -> int:
    """Load the run's latest checkpoint into the model, optimiser, EMA and task; the step to continue from."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0
    state = load_checkpoint(ckpt)
    load_module_state(raw, opt, state["model"], state["optimizer"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    if state["task_state"] is not None:
        task.load_state_dict(*state["task_state"])
    elif task.state_dict() is not None:
        raise ValueError(f"{ckpt} has no task_state.safetensors for this job")
    start = int(state["train_state"]["step"])
    log.info("resumed from %s (step %d)", ckpt, start)
    return start


def _truncate_metrics(metrics: Path, start: int) -> None:
    """Drop rows of steps after the checkpoint a run resumes from (a killed run's tail)."""
    if metrics.exists():
        rows = [line for line in metrics.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line)["step"] <= start]
        metrics.write_text("".join(line + "\n" for line in kept))


def _optimizer_step(task: Task, model: nn.Module, raw: nn.Module, opt: torch.optim.Optimizer, optim: OptimConfig,
                    info: DistInfo, autocast: Any, step: int, lr: float) -> float:
    """One optimiser step of ``grad_accum`` micro-batches (DDP syncs on the last); the loss averaged over ranks."""
    for group in opt.param_groups:
        group["lr"] = lr
    total = 0.0
    for micro in range(optim.grad_accum):
        sync = isinstance(model, nn.parallel.DistributedDataParallel) and micro < optim.grad_accum - 1
        with model.no_sync() if sync else contextlib.nullcontext(), autocast:
            loss = task.loss(model, step, micro, info.rank, info.world) / optim.grad_accum
        loss.backward()
        total += float(loss.detach())
    if optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw.parameters(), optim.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if info.world > 1:
        t = torch.tensor([total], device=info.device)
        dist.all_reduce(t)
        total = float(t) / info.world
    return total


def run_training(task: Task, optim: OptimConfig, run_dir: str | Path, run_config: dict[str, Any],
                 info: DistInfo | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Train ``task`` to ``optim.steps`` (resuming from the run's latest checkpoint).

    Set up (wrap, optimiser, EMA, task hooks), resume, loop over optimiser steps (metrics, checkpoints),
    then write the release when the run is complete.

    Args:
        task: the job.
        optim: optimisation settings.
        run_dir: run folder (checkpoints, ``metrics.jsonl``, ``loss.png``, ``final/``).
        run_config: the validated run config as plain data (saved in every checkpoint).
        info: distributed info (default: ``setup_distributed()``).
        max_steps: stop after this optimiser step even if ``optim.steps`` is larger (tests).

    Returns:
        ``{"losses": [(step, loss)], "steps_per_s": ..., "final": path | None, "start_step": ...}``.
    """
    info = info or setup_distributed()
    run_dir = Path(run_dir)
    if optim.threads:
        torch.set_num_threads(optim.threads)
    raw = task.model.to(info.device)
    parallel = "ddp" if optim.parallel == "auto" else optim.parallel
    model = _wrap(raw, info, parallel)
    opt = torch.optim.AdamW([p for p in raw.parameters() if p.requires_grad], lr=optim.lr, betas=optim.betas,
                            weight_decay=optim.weight_decay)
    ema = EMA(raw, optim.ema_decay) if optim.ema_decay > 0 else None
    task.setup(info, lambda m: _wrap(m, info, parallel))
    start = _resume(run_dir, raw, opt, ema, task)
    use_bf16 = optim.precision == "bf16" or (optim.precision == "auto" and info.device.type == "cuda")
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=use_bf16)
    end = min(optim.steps, max_steps) if max_steps is not None else optim.steps
    metrics = run_dir / "metrics.jsonl"
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics, start)
    losses: list[tuple[int, float]] = []
    t0, bar = time.perf_counter(), tqdm(total=end, initial=start, disable=not info.is_main, desc="train")
    configs = task.configs()

    def checkpoint(step: int) -> None:
        msd, osd = module_state(raw, opt)
        ema_sd = ema.state_dict() if ema is not None else None
        task_state = task.state_dict()
        if info.is_main:
            save_checkpoint(run_dir, step, msd, osd, task.config, {"run_config": run_config}, ema=ema_sd,
                            extra=task.extra(), keep=optim.keep_checkpoints, task_state=task_state,
                            configs=configs)
            plot_losses(metrics, run_dir / "loss.png", title=run_dir.name)

    raw.train()
    for step in range(start, end):
        lr = optim.lr * min(1.0, (step + 1) / max(optim.warmup, 1))
        total = _optimizer_step(task, model, raw, opt, optim, info, autocast, step, lr)
        if ema is not None:
            ema.update(raw, step)
        losses.append((step + 1, total))
        bar.update(1)
        bar.set_postfix(loss=f"{total:.4f}")
        extra_metrics = task.metrics()
        if extra_metrics:
            bar.set_postfix(loss=f"{total:.4f}", **{k: f"{v:.4f}" for k, v in extra_metrics.items()})
        if info.is_main:
            with metrics.open("a") as fh:
                fh.write(json.dumps({"step": step + 1, "loss": total, "lr": lr,
                                     "time": time.perf_counter() - t0, **extra_metrics}) + "\n")
        if (step + 1) % optim.log_every == 0 and info.is_main:
            log.info("step %d loss %.4f lr %.2e", step + 1, total, lr)
        if (step + 1) % optim.ckpt_every == 0 and step + 1 < end:
            checkpoint(step + 1)
    bar.close()
    elapsed = time.perf_counter() - t0
    final = None
    if end > start:
        checkpoint(end)
    if end == optim.steps:
        weights = ema.state_dict() if ema is not None else {k: v for k, v in module_state(raw, opt)[0].items()}
        if info.is_main:
            final = write_release(run_dir / "final", weights, task.config, task.extra(), run_config, configs)
    return {"losses": losses, "steps_per_s": (end - start) / elapsed if elapsed > 0 else 0.0, "final": final,
            "start_step": start}
