"""The model-folder format: checkpoints, releases, checksums and loading, for training and inference alike.

The one module that reads and writes model folders; training (``hand2world.train``), distillation,
streaming, evaluation and the server all go through it, and it imports nothing above
``hand2world.models`` (the shape of nanochat's ``checkpoint_manager``, below its engine and its
training scripts).

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
                                   run.json: the run config; a student adds stream.json: ``StreamConfig``)

Rules:
- Atomic: a checkpoint is written into ``NAME.tmp`` and renamed; ``latest`` is replaced with
  ``os.replace``. A crash never leaves a half checkpoint that resume would pick.
- Optimiser state is flattened to ``state.<param name>.<key>`` tensors keyed by parameter
  name (not position), param groups go to JSON; randomness derives from (seed, step, rank),
  so no RNG state is needed for an exact resume.
- ``load_video_model`` is the only code that reads a video-model folder; names resolve through
  ``hand2world.paths.checkpoint_path`` (shipped names under ``weights/``, runs, paths). EMA weights
  win when a folder has them (a step checkpoint); a release stores EMA weights as ``model.safetensors``.
- Integrity: when a folder has ``checksums.json`` (``{file name: sha256 hex}``), every listed
  file is hashed and compared before anything is loaded; a mismatch or a missing listed file
  raises ``ChecksumError`` naming the file. ``write_checksums`` creates that file (for
  shipping weights). Folders without it load unverified (training checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hand2world.models.autoencoder import build_autoencoder
from hand2world.models.config import AUTOENCODER_PRESETS, DiTConfig, StreamConfig, load_config, save_config
from hand2world.models.dit import DiT
from hand2world.paths import checkpoint_path, runs_dir, sha256_hex, weights_dir

log = logging.getLogger(__name__)

__all__ = ["CHECKSUMS", "ChecksumError", "autoencoder_extra", "flatten_optimizer_state", "latest_checkpoint",
           "load_autoencoder", "load_checkpoint", "load_video_model", "random_student", "resolve_model_folder",
           "save_checkpoint", "unflatten_optimizer_state", "verify_checksums", "write_checksums",
           "write_release", "write_student_release"]

CHECKSUMS = "checksums.json"
WEIGHTS_HINT = ("get weights by training a student (`hand2world distill --config ...`; its release folder is "
                "RUN/final) or a teacher (`hand2world train teacher`), or copy a released folder to "
                "weights/<name> (or $HAND2WORLD_WEIGHTS/<name>)")


# ---- checkpoints and releases (written by training) ----
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


def _write_model(tmp: Path, weights: dict[str, Tensor], config: Any,
                 extra: dict[str, tuple[dict[str, Tensor], Any]] | None, configs: dict[str, Any] | None) -> None:
    """``model.safetensors`` + ``config.json``, each extra as ``NAME.safetensors`` + ``NAME.json``, each of
    ``configs`` as ``NAME.json``."""
    save_file(_contiguous(weights), str(tmp / "model.safetensors"))
    save_config(config, tmp / "config.json")
    for name, (w, cfg) in (extra or {}).items():
        save_file(_contiguous(w), str(tmp / f"{name}.safetensors"))
        save_config(cfg, tmp / f"{name}.json")
    for name, cfg in (configs or {}).items():
        save_config(cfg, tmp / f"{name}.json")


def write_release(folder: Path, weights: dict[str, Tensor], config: Any,
                  extra: dict[str, tuple[dict[str, Tensor], Any]] | None = None,
                  run_config: dict[str, Any] | None = None, configs: dict[str, Any] | None = None) -> Path:
    """A weights folder: ``model.safetensors`` + ``config.json`` (+ named extras, ``run.json``, and
    ``NAME.json`` for each of ``configs``, e.g. a student's ``stream.json``), atomically."""
    def write(tmp: Path) -> None:
        if run_config is not None:
            (tmp / "run.json").write_text(json.dumps(run_config, indent=1))
        _write_model(tmp, weights, config, extra, configs)
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
        _write_model(tmp, model, config, extra, configs)
        if ema is not None:
            save_file(_contiguous(ema), str(tmp / "ema.safetensors"))
        save_file(_contiguous(opt_tensors), str(tmp / "optimizer.safetensors"))
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


# ---- the autoencoder of a video model ----
def load_autoencoder(spec: str, device: torch.device | str = "cpu") -> nn.Module:
    """A frozen autoencoder: ``preset:NAME`` (untrained, tests) or a folder with ``config.json`` +
    ``model.safetensors`` (an autoencoder release, or a teacher checkpoint's ``autoencoder.*``)."""
    if spec.startswith("preset:"):
        torch.manual_seed(0)
        ae = build_autoencoder(AUTOENCODER_PRESETS[spec.split(":", 1)[1]])
    else:
        folder = checkpoint_path(spec)
        if (folder / "autoencoder.json").is_file():  # a teacher checkpoint carries its autoencoder
            cfg, weights = load_config(folder / "autoencoder.json"), folder / "autoencoder.safetensors"
        else:
            cfg, weights = load_config(folder / "config.json"), folder / "model.safetensors"
        ae = build_autoencoder(cfg)
        if cfg.trained_here:
            ae.load_state_dict(load_file(str(weights)))
    return ae.to(device).eval().requires_grad_(False)


def autoencoder_extra(ae: nn.Module) -> dict[str, tuple[dict[str, Tensor], Any]]:
    """The autoencoder's weights + config stored beside a video model (autoencoders trained here; the Wan VAE
    is referenced by its own config)."""
    ae_cfg = getattr(ae, "config", None)
    if ae_cfg is None or not getattr(ae_cfg, "trained_here", False):
        return {}
    return {"autoencoder": ({k: v for k, v in ae.state_dict().items()}, ae_cfg)}


# ---- checksums and loading (read by inference and training) ----
class ChecksumError(RuntimeError):
    """A file of a model folder does not match its recorded sha256."""


def write_checksums(folder: str | Path) -> Path:
    """Write ``folder/checksums.json``: sha256 of every regular file in ``folder`` (not recursing) except
    prose (``*.md``: the model card may be edited without touching the weights)."""
    folder = Path(folder)
    sums = {p.name: sha256_hex(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != CHECKSUMS and p.suffix != ".md"}
    out = folder / CHECKSUMS
    out.write_text(json.dumps(sums, indent=1) + "\n")
    return out


def verify_checksums(folder: str | Path) -> bool:
    """Check the files ``checksums.json`` lists; False when the folder has none, raises on a mismatch."""
    folder = Path(folder)
    path = folder / CHECKSUMS
    if not path.is_file():
        return False
    sums = json.loads(path.read_text())
    if not isinstance(sums, dict):
        raise ChecksumError(f"{path}: expected a JSON object {{file: sha256}}")
    for name, expected in sums.items():
        f = folder / name
        if not f.is_file():
            raise ChecksumError(f"{f} is listed in {path} but missing")
        got = sha256_hex(f)
        if got != str(expected).lower():
            raise ChecksumError(f"checksum mismatch for {f}: sha256 {got}, expected {expected} (from {path}); "
                                "the file is corrupt or was changed: download/copy it again")
    log.debug("verified %d files in %s", len(sums), folder)
    return True


def resolve_model_folder(path_or_name: str | Path) -> Path:
    """A model folder from a path, a shipped name (``weights/NAME``) or a run; clear FileNotFoundError."""
    try:
        folder = checkpoint_path(path_or_name)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model weights {str(path_or_name)!r} not found (looked for {path_or_name}, "
                                f"{weights_dir() / str(path_or_name)}, {runs_dir() / str(path_or_name)}); "
                                f"{WEIGHTS_HINT}") from exc
    missing = [n for n in ("config.json",) if not (folder / n).is_file()]
    if not (folder / "model.safetensors").is_file() and not (folder / "ema.safetensors").is_file():
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(f"{folder} is not a model folder: missing {', '.join(missing)}; {WEIGHTS_HINT}")
    return folder


def _run_config(folder: Path) -> dict[str, Any]:
    if (folder / "run.json").is_file():
        return json.loads((folder / "run.json").read_text())
    if (folder / "train_state.json").is_file():
        return json.loads((folder / "train_state.json").read_text()).get("run_config", {})
    return {}


def load_video_model(path_or_name: str | Path, device: torch.device | str = "cpu", verify: bool = True,
                     ) -> tuple[DiT, nn.Module, StreamConfig | None, dict[str, Any]]:
    """Load a video model folder.

    Args:
        path_or_name: folder, shipped name or run (``resolve_model_folder``).
        device: where the modules go.
        verify: check ``checksums.json`` when the folder has one.

    Returns:
        ``(dit, autoencoder, stream_config, run_config)``: the DiT in eval mode (EMA weights when
        present), its frozen autoencoder, the ``StreamConfig`` of ``stream.json`` (None for a
        teacher) and the run config dict (``{}`` when absent).
    """
    folder = resolve_model_folder(path_or_name)
    if verify and verify_checksums(folder):
        log.info("checksums verified: %s", folder)
    cfg = load_config(folder / "config.json")
    if not isinstance(cfg, DiTConfig):
        raise ValueError(f"{folder / 'config.json'} holds a {type(cfg).__name__}, not a DiTConfig (a video model)")
    model = DiT(cfg)
    weights = folder / ("ema.safetensors" if (folder / "ema.safetensors").is_file() else "model.safetensors")
    model.load_state_dict(load_file(str(weights)))
    if not (folder / "autoencoder.json").is_file():
        raise FileNotFoundError(f"{folder} has no autoencoder.json/autoencoder.safetensors (the model's latent "
                                f"space); {WEIGHTS_HINT}")
    ae = load_autoencoder(str(folder), device)
    stream = load_config(folder / "stream.json") if (folder / "stream.json").is_file() else None
    if stream is not None and not isinstance(stream, StreamConfig):
        raise ValueError(f"{folder / 'stream.json'} holds a {type(stream).__name__}, not a StreamConfig")
    log.info("loaded %s (%s, %.1fM parameters)", folder, weights.name,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model.to(device).eval().requires_grad_(False), ae, stream, _run_config(folder)


def write_student_release(folder: str | Path, model: DiT, autoencoder: nn.Module, stream: StreamConfig,
                          run_config: dict[str, Any] | None = None, checksums: bool = True) -> Path:
    """Write a student release folder (``write_release`` layout + ``stream.json`` [+ ``checksums.json``])."""
    folder = write_release(Path(folder), model.state_dict(), model.config,
                           extra={"autoencoder": (autoencoder.state_dict(), autoencoder.config)},
                           run_config=run_config or {"kind": "student"})
    save_config(stream, folder / "stream.json")
    if checksums:
        write_checksums(folder)
    return folder


def random_student(config: DiTConfig, autoencoder: str = "tiny", seed: int = 0) -> tuple[DiT, nn.Module]:
    """An untrained DiT and per-frame autoencoder (``AUTOENCODER_PRESETS[autoencoder]``: conv or composite; any
    other kind becomes conv), for tests and speed benchmarks.

    The autoencoder's latent channels follow ``config.latent_channels`` and its levels ``config.vae_factor``.
    """
    ae_cfg = AUTOENCODER_PRESETS[autoencoder]
    levels = int(math.log2(config.vae_factor))
    if 2**levels != config.vae_factor:
        raise ValueError(f"vae_factor {config.vae_factor} is not a power of two (conv autoencoder)")

    def widths(w: tuple[int, ...], n: int) -> tuple[int, ...]:
        return tuple(w[min(i, len(w) - 1)] for i in range(n))

    kind = ae_cfg.kind if ae_cfg.kind == "composite" else "conv"
    guide = widths(ae_cfg.guide_channels, levels + 1) if kind == "composite" else ()
    ae_cfg = dataclasses.replace(ae_cfg, kind=kind, latent_channels=config.latent_channels,
                                 channels=widths(ae_cfg.channels, levels), guide_channels=guide, temporal_factor=1)
    torch.manual_seed(seed)
    model = DiT(config).eval()
    return model, build_autoencoder(ae_cfg).eval()
