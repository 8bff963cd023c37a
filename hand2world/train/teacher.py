"""Teacher (and block-causal) training task: rectified flow on autoencoder latents of clips.

Design choices:
- The autoencoder is frozen and loaded from its release folder (``final/``); its weights and
  config are copied into every teacher checkpoint, so a teacher checkpoint is self-contained
  (``generate`` and distillation need nothing else).
- Batches come from ``hand2world.train.windows.LatentWindows`` (the batch code every video-model
  job shares); hands and camera are dropped independently here, for guidance.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor

from hand2world.checkpoints import autoencoder_extra, load_autoencoder, load_video_model
from hand2world.diffusion import flow_loss, sample_timesteps
from hand2world.models import Conditioning, DiT, drop_conditions
from hand2world.train.config import TeacherRunConfig
from hand2world.train.data import ClipSource, open_dataset
from hand2world.train.trainer import Task
from hand2world.train.windows import LatentWindows, WindowBatch

log = logging.getLogger(__name__)

# DiTConfig fields an ``init`` may differ in: the ablation switches (mask conditioning, no Plücker adapter) and
# the scene warp (the same channels, warped).
INIT_MAY_DIFFER = ("control_input", "camera_adapter_dim", "scene_warp_depth")

__all__ = ["TeacherTask"]


class TeacherTask(Task):
    """Rectified-flow training of the DiT on clip windows.

    Args:
        cfg: validated run config.
        dataset: a ClipDataset-like object (default: from ``cfg.data``).
        device: where the batches go.
    """

    def __init__(self, cfg: TeacherRunConfig, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.ae = load_autoencoder(cfg.autoencoder, self.device)
        factor = self.ae.spatial_factor
        temporal = getattr(self.ae, "temporal_factor", 1)
        self.config = cfg.dit_config(self.ae.latent_channels, factor, temporal)
        if cfg.data.size % (factor * self.config.patch_size[1]):
            raise ValueError(f"data.size {cfg.data.size} must be a multiple of {factor * self.config.patch_size[1]}")
        torch.manual_seed(cfg.optim.seed)  # identical initial weights on every rank
        self.model = DiT(self.config)
        if cfg.init:
            self._load_init(cfg.init)
        self.model.gradient_checkpointing = cfg.optim.gradient_checkpointing
        self.source = ClipSource(dataset if dataset is not None else open_dataset(cfg.data, self.config.control_input),
                                 cfg.data.size, cfg.data.frames)
        self.windows = LatentWindows(self.source, self.ae, self.config, self.device)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("DiT %s: %.2fM parameters, %d clips", cfg.model.preset, n_params / 1e6, len(self.source))

    def _load_init(self, spec: str) -> None:
        """Start from earlier weights (``cfg.init``) in the same latent space.

        The architecture must match, except for the ablation switches (``INIT_MAY_DIFFER``): an ablation
        fine-tuned from the same weights as the model it is compared with (the mask-conditioned model
        reads the same channels; the no-Plücker model drops the adapter's weights).
        """
        init, init_ae, _, _ = load_video_model(spec, "cpu")
        same = dataclasses.replace(init.config, **{f: getattr(self.config, f) for f in INIT_MAY_DIFFER})
        if same != self.config:
            raise ValueError(f"init {spec!r} has another architecture than this run: {init.config} vs {self.config}")
        mine = self.ae.state_dict()
        if any(not torch.equal(v.cpu(), mine[k].cpu()) for k, v in init_ae.state_dict().items()):
            raise ValueError(f"init {spec!r} was trained in another autoencoder's latent space than "
                             f"{self.cfg.autoencoder!r}")
        missing, unexpected = self.model.load_state_dict(init.state_dict(), strict=False)
        if missing:
            raise ValueError(f"init {spec!r} lacks weights this model needs: {missing[:4]}")
        log.info("initialised from %s%s", spec, f" (left out {len(unexpected)} tensors)" if unexpected else "")

    def extra(self) -> dict[str, tuple[dict[str, Tensor], Any]]:
        return autoencoder_extra(self.ae)

    @torch.no_grad()
    def sample(self, step: int, micro: int, rank: int, world: int) -> WindowBatch:
        """One micro-batch (deterministic) with condition dropout."""
        b = self.windows.sample(self.cfg.optim, step, micro, rank, world)
        b.cond = drop_conditions(b.cond, self.cfg.p_drop_hands, self.cfg.p_drop_camera, generator=b.generator)
        return b

    def batch(self, step: int, micro: int, rank: int, world: int) -> tuple[Tensor, Conditioning, torch.Generator]:
        """Clean latents ``[B, C, T, h, w]`` and conditions of one micro-batch (deterministic), with dropout."""
        b = self.sample(step, micro, rank, world)
        return b.x0, b.cond, b.generator

    def loss(self, model: Any, step: int, micro: int, rank: int, world: int) -> Tensor:
        b = self.sample(step, micro, rank, world)
        c, x0, g = self.cfg, b.x0, b.generator
        t = sample_timesteps(x0.shape[0], c.t_shift, c.t_mean, c.t_std, generator=g, device=x0.device)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        weight = 1.0 + c.hand_loss_weight * b.hands if c.hand_loss_weight else None
        return flow_loss(model, x0, b.cond, t, noise, causal=c.causal, weight=weight)
