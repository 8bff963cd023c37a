"""Autoencoder training task: per-frame reconstruction of video frames and control renders.

Design choices:
- Batches are single frames drawn from clips (``control_fraction`` of them control renders,
  which the autoencoder must encode too), deterministic in (seed, step, micro, rank).
- After training, per-channel latent mean/std over ``stats_frames`` frames are measured and
  written into the released ``config.json``, so the DiT sees unit-scale latents.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hand2world.models import FrameAutoencoder
from hand2world.models.config import save_config
from hand2world.train.config import AutoencoderRunConfig
from hand2world.train.data import ClipSource, batch_indices, step_generator
from hand2world.train.teacher import open_dataset

log = logging.getLogger(__name__)

__all__ = ["AutoencoderTask", "finalize_autoencoder"]


class AutoencoderTask:
    """Frame reconstruction with ``FrameAutoencoder.loss``."""

    def __init__(self, cfg: AutoencoderRunConfig, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.config = cfg.autoencoder_config()
        if self.config.kind != "conv":
            raise ValueError("only the conv autoencoder is trained here (the Wan VAE comes pretrained)")
        torch.manual_seed(cfg.optim.seed)
        self.model = FrameAutoencoder(self.config)
        self.source = ClipSource(dataset if dataset is not None else open_dataset(cfg.data), cfg.data.size, 1)

    def extra(self) -> dict[str, tuple[dict[str, Tensor], Any]]:
        return {}

    def frames(self, step: int, micro: int, rank: int, world: int, crop: int | None = None) -> Tensor:
        """``[N, 3, S, S]`` frames in [-1, 1] (``[N, 3, crop, crop]`` random crops with ``crop``)."""
        crop = self.cfg.crop if crop is None else crop
        o = self.cfg.optim
        g = step_generator(o.seed, step, micro, rank)
        out = []
        for i in batch_indices(len(self.source), o.batch_size, o.seed, step, micro, rank, world, o.grad_accum):
            clip = self.source.clip(i)
            t = int(torch.randint(0, clip["video"].shape[0], (1,), generator=g))
            key = "control" if float(torch.rand(1, generator=g)) < self.cfg.control_fraction else "video"
            frame = clip[key][t]
            if crop:
                y, x = (int(v) for v in torch.randint(0, frame.shape[0] - crop + 1, (2,), generator=g))
                frame = frame[y:y + crop, x:x + crop]
            out.append(torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1.0)
        return torch.stack(out).to(self.device)

    def loss(self, model: Any, step: int, micro: int, rank: int, world: int) -> Tensor:
        frames = self.frames(step, micro, rank, world)
        rec, z = model(frames)
        return FrameAutoencoder.reconstruction_loss(frames, rec, z)


@torch.no_grad()
def finalize_autoencoder(task: AutoencoderTask, final_dir: str | Path) -> dict[str, Any]:
    """Measure latent statistics, write them into ``final/config.json``; report reconstruction PSNR."""
    ae = task.model.eval()
    n = max(1, task.cfg.stats_frames // task.cfg.optim.batch_size)
    zs, psnr = [], []
    for k in range(n):
        frames = task.frames(10**6 + k, 0, 0, 1, crop=0)
        z = ae.encode_frames(frames, normalize=False)
        zs.append(z.transpose(0, 1).flatten(1))
        rec = ae.decode_frames(z, normalized=False).clamp(-1, 1)
        psnr.append(float(-10 * torch.log10(((rec - frames) / 2).pow(2).mean().clamp_min(1e-10))))
    z = torch.cat(zs, 1)
    cfg = dataclasses.replace(ae.config, latent_mean=tuple(z.mean(1).tolist()),
                              latent_std=tuple(z.std(1).clamp_min(1e-4).tolist()))
    save_config(cfg, Path(final_dir) / "config.json")
    return {"psnr_db": sum(psnr) / len(psnr), "latent_std": cfg.latent_std}
