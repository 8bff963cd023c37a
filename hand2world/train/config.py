"""Run configs: YAML files validated once, at load, into frozen dataclasses.

Design choices:
- One schema per job (``TeacherRunConfig``, ``AutoencoderRunConfig``) built from small
  sections (``DataConfig``, ``OptimConfig``); unknown keys and wrong types fail at load with
  the offending key named, never mid-run.
- The architecture is not repeated here: ``model`` names a preset (``DIT_PRESETS``) plus
  optional ``overrides``; the resolved ``DiTConfig`` is saved beside the weights.
- ``override`` applies ``a.b=value`` strings from the command line (YAML-parsed values).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hand2world.models.config import AUTOENCODER_PRESETS, DIT_PRESETS, AutoencoderConfig, DiTConfig

__all__ = ["AutoencoderRunConfig", "DataConfig", "OptimConfig", "TeacherRunConfig", "load_run_config", "override"]


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they are cut.

    Attributes:
        root: a ``hand2world.data.ClipDataset`` folder; ``None`` = procedural clips (tests, smoke runs).
        split: ClipDataset split to read (``None`` = all).
        procedural_clips: number of procedural clips when ``root`` is None.
        frames: pixel frames per training clip (Wan VAE: 1 + 4k).
        size: square training resolution (clips are resized; ``K`` scaled with them).
        seed: procedural-clip seed.
    """

    root: str | None = None
    split: str | None = None
    procedural_clips: int = 64
    frames: int = 9
    size: int = 128
    seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation, precision, parallelism, checkpointing.

    Attributes:
        steps: optimiser steps in total.
        batch_size: clips (teacher) or frames (autoencoder) per rank per micro-step.
        grad_accum: micro-steps per optimiser step.
        lr, weight_decay, betas, warmup, grad_clip: AdamW and schedule (linear warm-up, then constant).
        ema_decay: EMA of weights (0 = off).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU) | ``bf16`` | ``fp32``.
        parallel: ``auto`` (DDP under torchrun) | ``ddp`` | ``fsdp`` | ``none``.
        seed: everything random derives from (seed, step, rank): exact resume.
        log_every, ckpt_every: in optimiser steps; ``keep_checkpoints`` most recent kept.
        threads: torch CPU threads (0 = leave torch's default).
        gradient_checkpointing: recompute transformer-block activations in backward (memory for compute).
    """

    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "auto"
    parallel: str = "auto"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    threads: int = 0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto|bf16|fp32, got {self.precision!r}")
        if self.parallel not in ("auto", "ddp", "fsdp", "none"):
            raise ValueError(f"parallel must be auto|ddp|fsdp|none, got {self.parallel!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A preset name plus field overrides."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherRunConfig:
    """``hand2world train teacher``.

    Attributes:
        model: DiT preset + overrides.
        autoencoder: a trained autoencoder checkpoint (folder), or ``preset:NAME`` for an
            untrained one (tests and smoke runs only).
        data, optim: sections above.
        out_dir: run folder (checkpoints, metrics, loss curve); relative paths resolve under
            ``hand2world.paths.runs_dir()``.
        causal: train with the block-causal mask (student-style) instead of bidirectional.
        p_drop_hands, p_drop_camera: condition dropout for classifier-free guidance.
        t_shift, t_mean, t_std: logit-normal timestep sampling with shift.
        hand_loss_weight: extra loss weight on latent cells the hands cover (weight ``1 + w * coverage``,
            coverage from the control render): spends the small model's capacity where the hands are
            drawn, which the whole-frame mean hardly rewards (hands are a few % of the pixels).
        init: start from these DiT weights (a run, checkpoint or weights folder with the same
            architecture, e.g. an earlier teacher or student; ``None`` = random initialisation).
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    autoencoder: str = "preset:tiny"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    out_dir: str = "teacher_tiny"
    causal: bool = False
    p_drop_hands: float = 0.1
    p_drop_camera: float = 0.1
    t_shift: float = 1.0
    t_mean: float = 0.0
    t_std: float = 1.0
    hand_loss_weight: float = 0.0
    init: str | None = None

    def dit_config(self, latent_channels: int, vae_factor: int, vae_temporal_factor: int) -> DiTConfig:
        """The preset with overrides, matched to the autoencoder's latent space."""
        if self.model.preset not in DIT_PRESETS:
            raise ValueError(f"unknown model preset {self.model.preset!r}; known: {sorted(DIT_PRESETS)}")
        base = dataclasses.replace(DIT_PRESETS[self.model.preset], **self.model.overrides)
        lat = self.data.size // vae_factor
        return dataclasses.replace(base, latent_channels=latent_channels, vae_factor=vae_factor,
                                   vae_temporal_factor=vae_temporal_factor, latent_size=(lat, lat))


@dataclass(frozen=True)
class AutoencoderRunConfig:
    """``hand2world train autoencoder``: frames of video and control renders, L1 + MSE."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16, lr=1e-3, ema_decay=0.0))
    out_dir: str = "autoencoder_tiny"
    control_fraction: float = 0.5
    stats_frames: int = 512
    crop: int = 0  # train on random square crops of this size (fully convolutional; 0 = whole frames)
    init: str | None = None  # start from an autoencoder release of the same architecture (e.g. the guide-only
    #                          reference fine-tuned from the composite autoencoder)
    hand_weight: float = 0.0  # composite: extra loss weight near the hands (the control render, dilated)
    hand_dilate: int = 6  # composite: pixels of that dilation (shadows and contact sit beside the hand)

    def autoencoder_config(self) -> AutoencoderConfig:
        if self.model.preset not in AUTOENCODER_PRESETS:
            raise ValueError(f"unknown autoencoder preset {self.model.preset!r}")
        return dataclasses.replace(AUTOENCODER_PRESETS[self.model.preset], **self.model.overrides)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        return tuple(_convert(a, v, where) for a, v in zip(typing.get_args(tp), value, strict=True))
    if origin is dict or tp is Any:
        return value
    if tp is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads "5e-4" as a string
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys at {where or 'top level'}: {sorted(unknown)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def override(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a raw config dict."""
    for item in assignments:
        key, _, raw = item.partition("=")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_run_config(path: str | Path | None, cls: type, overrides: list[str] | None = None) -> Any:
    """Read a YAML run config into ``cls`` (defaults when ``path`` is None)."""
    data = yaml.safe_load(Path(path).read_text()) if path else {}
    return from_dict(cls, override(data or {}, overrides or []))


def to_dict(config: Any) -> dict[str, Any]:
    """A run config as plain data (for ``train_state.json`` and logs)."""
    return dataclasses.asdict(config)
