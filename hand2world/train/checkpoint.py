"""Checkpoints: safetensors + config.json, written atomically, enough state for exact resume.

Layout of a run folder::

    RUN/
      checkpoints/step_0000500/    model.safetensors   (training weights)
                                   ema.safetensors     (EMA weights; absent when EMA is off)
                                   optimizer.safetensors + train_state.json  (AdamW moments, step, run config)
                                   config.json         (architecture: DiTConfig / AutoencoderConfig)
                                   autoencoder.safetensors + autoencoder.json  (teacher: its latent space)
                                   task_state.safetensors  (optional: a task's own state, e.g. the DMD critic
                                   and its optimiser; its JSON part sits in train_state.json["task"])
                                   NAME.json           (optional configs of the task, e.g. stream.json)
      checkpoints/latest           name of the newest complete checkpoint
      final/                       release: EMA weights as model.safetensors + config.json (+ autoencoder,
                                   run.json: the run config)
      metrics.jsonl, loss.png

Design choices:
- Atomic: a checkpoint is written into ``NAME.tmp`` and renamed; ``latest`` is replaced with
  ``os.replace``. A crash never leaves a half checkpoint that resume would pick.
- Optimiser state is flattened to ``state.<param name>.<key>`` tensors keyed by parameter
  name (not position), param groups go to JSON; randomness derives from (seed, step, rank),
  so no RNG state is needed for an exact resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from hand2world.models.config import save_config

log = logging.getLogger(__name__)

__all__ = ["flatten_optimizer_state", "latest_checkpoint", "save_checkpoint", "unflatten_optimizer_state"]


def _contiguous(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def flatten_optimizer_state(osd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Name-keyed optimiser state dict -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for name, st in osd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"state.{name}.{k}"] = v
            else:
                scalars[f"{name}.{k}"] = v
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, v in tensors.items():
        name, k = key[len("state."):].rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        name, k = key.rsplit(".", 1)
        state.setdefault(name, {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _write_dir_atomic(final: Path, write: Any) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def write_release(folder: Path, weights: dict[str, Tensor], config: Any,
                  extra: dict[str, tuple[dict[str, Tensor], Any]] | None = None,
                  run_config: dict[str, Any] | None = None, configs: dict[str, Any] | None = None) -> Path:
    """A weights folder: ``model.safetensors`` + ``config.json`` (+ named extras, ``run.json``, and
    ``NAME.json`` for each of ``configs``, e.g. a student's ``stream.json``), atomically."""
    def write(tmp: Path) -> None:
        if run_config is not None:
            (tmp / "run.json").write_text(json.dumps(run_config, indent=1))
        save_file(_contiguous(weights), str(tmp / "model.safetensors"))
        save_config(config, tmp / "config.json")
        for name, (w, cfg) in (extra or {}).items():
            save_file(_contiguous(w), str(tmp / f"{name}.safetensors"))
            save_config(cfg, tmp / f"{name}.json")
        for name, cfg in (configs or {}).items():
            save_config(cfg, tmp / f"{name}.json")
    return _write_dir_atomic(Path(folder), write)


def save_checkpoint(run_dir: str | Path, step: int, model: dict[str, Tensor], optimizer: dict[str, Any],
                    config: Any, train_state: dict[str, Any], ema: dict[str, Tensor] | None = None,
                    extra: dict[str, tuple[dict[str, Tensor], Any]] | None = None, keep: int = 2,
                    task_state: tuple[dict[str, Tensor], dict[str, Any]] | None = None,
                    configs: dict[str, Any] | None = None) -> Path:
    """Write ``RUN/checkpoints/step_N`` atomically, point ``latest`` at it, prune old ones.

    ``task_state`` = (tensors, JSON-able meta) of a task's own state (``task_state.safetensors``
    and ``train_state.json["task"]``); ``configs`` are written as ``NAME.json``.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer)

    def write(tmp: Path) -> None:
        save_file(_contiguous(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(_contiguous(ema), str(tmp / "ema.safetensors"))
        save_file(_contiguous(opt_tensors), str(tmp / "optimizer.safetensors"))
        save_config(config, tmp / "config.json")
        for name, (w, cfg) in (extra or {}).items():
            save_file(_contiguous(w), str(tmp / f"{name}.safetensors"))
            save_config(cfg, tmp / f"{name}.json")
        for name, cfg in (configs or {}).items():
            save_config(cfg, tmp / f"{name}.json")
        meta = {**train_state, "step": step, "optimizer": opt_meta}
        if task_state is not None:
            save_file(_contiguous(task_state[0]), str(tmp / "task_state.safetensors"))
            meta["task"] = task_state[1]
        (tmp / "train_state.json").write_text(json.dumps(meta, indent=1))

    path = _write_dir_atomic(ckpt_root / f"step_{step:07d}", write)
    pointer = ckpt_root / "latest.tmp"
    pointer.write_text(path.name + "\n")
    os.replace(pointer, ckpt_root / "latest")
    done = sorted(p for p in ckpt_root.glob("step_*") if not p.name.endswith(".tmp"))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", path)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint folder: model, ema (or None), optimizer state dict, train_state, task_state (or None)."""
    path = Path(path)
    state = json.loads((path / "train_state.json").read_text())
    ema = path / "ema.safetensors"
    task = path / "task_state.safetensors"
    return {
        "task_state": (load_file(str(task)), state.get("task", {})) if task.is_file() else None,
        "model": load_file(str(path / "model.safetensors")),
        "ema": load_file(str(ema)) if ema.is_file() else None,
        "optimizer": unflatten_optimizer_state(load_file(str(path / "optimizer.safetensors")), state["optimizer"]),
        "train_state": state,
    }

