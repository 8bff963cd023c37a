"""One loader for video-model folders (teacher and student releases, step checkpoints) + checksums.

A model folder (``hand2world.train.checkpoint``'s layout) holds ``config.json`` (``DiTConfig``),
``model.safetensors`` (and, in a step checkpoint, ``ema.safetensors``), ``autoencoder.json`` +
``autoencoder.safetensors`` (its latent space), ``run.json`` (or ``train_state.json``: the run
config) and, for a streaming student, ``stream.json`` (``StreamConfig``).

Design choices:
- ``load_video_model`` is the only code that reads such a folder; ``TeacherSampler`` and
  ``StreamingGenerator`` both go through it. Names resolve through
  ``hand2world.paths.checkpoint_path`` (shipped names under ``weights/``, runs, paths).
- EMA weights win when a folder has them (a step checkpoint); a release stores EMA weights as
  ``model.safetensors``.
- Integrity: when a folder has ``checksums.json`` (``{file name: sha256 hex}``), every listed
  file is hashed and compared before anything is loaded; a mismatch or a missing listed file
  raises ``ChecksumError`` naming the file. ``write_checksums`` creates that file (for
  shipping weights). Folders without it load unverified (training checkpoints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from hand2world.models.config import DiTConfig, StreamConfig, load_config
from hand2world.models.dit import DiT

log = logging.getLogger(__name__)

__all__ = ["CHECKSUMS", "ChecksumError", "load_video_model", "random_student", "resolve_model_folder",
           "verify_checksums", "write_checksums", "write_student_release"]

CHECKSUMS = "checksums.json"
WEIGHTS_HINT = ("get weights by training a student (`hand2world distill --config ...`; its release folder is "
                "RUN/final) or a teacher (`hand2world train teacher`), or copy a released folder to "
                "weights/<name> (or $HAND2WORLD_WEIGHTS/<name>)")


class ChecksumError(RuntimeError):
    """A file of a model folder does not match its recorded sha256."""


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: str | Path) -> Path:
    """Write ``folder/checksums.json``: sha256 of every regular file in ``folder`` (not recursing) except
    prose (``*.md``: the model card may be edited without touching the weights)."""
    folder = Path(folder)
    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir())
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
        got = _sha256(f)
        if got != str(expected).lower():
            raise ChecksumError(f"checksum mismatch for {f}: sha256 {got}, expected {expected} (from {path}); "
                                "the file is corrupt or was changed: download/copy it again")
    log.debug("verified %d files in %s", len(sums), folder)
    return True


def resolve_model_folder(path_or_name: str | Path) -> Path:
    """A model folder from a path, a shipped name (``weights/NAME``) or a run; clear FileNotFoundError."""
    from hand2world.paths import checkpoint_path, runs_dir, weights_dir

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
    from hand2world.train.teacher import load_autoencoder

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
    from hand2world.models.config import save_config
    from hand2world.train.checkpoint import write_release

    folder = write_release(Path(folder), model.state_dict(), model.config,
                           extra={"autoencoder": (autoencoder.state_dict(), autoencoder.config)},
                           run_config=run_config or {"kind": "student"})
    save_config(stream, folder / "stream.json")
    if checksums:
        write_checksums(folder)
    return folder


def random_student(config: DiTConfig, autoencoder: str = "tiny", seed: int = 0) -> tuple[DiT, nn.Module]:
    """An untrained DiT and conv autoencoder (``AUTOENCODER_PRESETS[autoencoder]``), for tests and speed benchmarks.

    The autoencoder's latent channels follow ``config.latent_channels`` and its levels ``config.vae_factor``.
    """
    import math

    from hand2world.models.autoencoder import build_autoencoder
    from hand2world.models.config import AUTOENCODER_PRESETS

    ae_cfg = AUTOENCODER_PRESETS[autoencoder]
    levels = int(math.log2(config.vae_factor))
    if 2**levels != config.vae_factor:
        raise ValueError(f"vae_factor {config.vae_factor} is not a power of two (conv autoencoder)")
    chans = tuple(ae_cfg.channels[min(i, len(ae_cfg.channels) - 1)] for i in range(levels))
    ae_cfg = dataclasses.replace(ae_cfg, kind="conv", latent_channels=config.latent_channels, channels=chans,
                                 temporal_factor=1)
    torch.manual_seed(seed)
    model = DiT(config).eval()
    return model, build_autoencoder(ae_cfg).eval()
