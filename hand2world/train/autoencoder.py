"""Autoencoder training task: per-frame reconstruction of video frames and control renders.

Design choices:
- Batches are single frames drawn from clips (``control_fraction`` of them control renders,
  which the autoencoder must encode too), deterministic in (seed, step, micro, rank).
- The composite autoencoder (``kind="composite"``) reconstructs video frames over their guide: the
  clip's scene photo (``ClipSource``'s ``scene``: the hands-free first view, or frame 0 where a
  clip has none) warped into the frame's camera at full resolution, and the frame's control render,
  exactly as streaming builds it. Crops are aligned to the latent grid so that latent cells and guide
  pixels stay registered. Pixels near the hands (the control render dilated by ``hand_dilate``) weigh
  ``1 + hand_weight``.
- After training, per-channel latent mean/std over ``stats_frames`` frames are measured and
  written into the released ``config.json``, so the DiT sees unit-scale latents.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hand2world.geometry import relative_c2w
from hand2world.models import FrameAutoencoder, build_autoencoder
from hand2world.models.composite import CompositeAutoencoder, composite_guide, warp_image
from hand2world.models.config import save_config
from hand2world.train.config import AutoencoderRunConfig
from hand2world.train.data import ClipSource, batch_indices, open_dataset, step_generator
from hand2world.train.trainer import Task

log = logging.getLogger(__name__)

__all__ = ["AutoencoderTask", "finalize_autoencoder"]


class AutoencoderTask(Task):
    """Frame reconstruction with ``FrameAutoencoder.loss``."""

    def __init__(self, cfg: AutoencoderRunConfig, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.config = cfg.autoencoder_config()
        if self.config.kind == "wan":
            raise ValueError("only the conv and composite autoencoders are trained here (the Wan VAE comes pretrained)")
        self.composite = self.config.kind == "composite"
        if self.composite and cfg.control_fraction:
            raise ValueError("the composite autoencoder reconstructs video frames over their guide: set "
                             "control_fraction: 0")
        torch.manual_seed(cfg.optim.seed)
        self.model = build_autoencoder(self.config)
        if cfg.init:
            from hand2world.checkpoints import load_autoencoder

            init = load_autoencoder(cfg.init)
            if dataclasses.replace(init.config, latent_mean=(), latent_std=(), latent_noise=0.0, latent_dropout=0.0) \
                    != dataclasses.replace(self.config, latent_noise=0.0, latent_dropout=0.0):
                raise ValueError(f"init {cfg.init!r} has another architecture: {init.config} vs {self.config}")
            self.model.load_state_dict(init.state_dict())
            log.info("autoencoder initialised from %s", cfg.init)
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

    def guided(self, step: int, micro: int, rank: int, world: int, crop: int | None = None
               ) -> tuple[Tensor, Tensor, Tensor, torch.Generator]:
        """Composite batches: frames ``[N, 3, s, s]``, guides ``[N, 6, s, s]``, hand weights ``[N, 1, s, s]`` and
        the step's generator (crops of ``crop`` pixels aligned to the latent grid; 0 = whole frames)."""
        crop = self.cfg.crop if crop is None else crop
        o, f = self.cfg.optim, self.config.spatial_factor
        g = step_generator(o.seed, step, micro, rank)
        frames, guides, hands = [], [], []
        for i in batch_indices(len(self.source), o.batch_size, o.seed, step, micro, rank, world, o.grad_accum):
            clip = self.source.clip(i)
            n = clip["video"].shape[0]
            t = int(torch.randint(1 if n > 1 else 0, n, (1,), generator=g))
            rel = relative_c2w(torch.from_numpy(clip["c2w"][[0, t]]))[1:][None]  # [1, 1, 4, 4]
            scene = _to_unit(clip["scene"])[None]
            warped = warp_image(scene, torch.from_numpy(clip["K"]), rel, self.config.guide_warp_depth)[:, :, 0]
            x, c = _to_unit(clip["video"][t])[None], _to_unit(clip["control"][t])[None]
            if crop:
                cells = x.shape[-1] // f - crop // f
                y0, x0 = (int(v) * f for v in torch.randint(0, cells + 1, (2,), generator=g))
                x, c, warped = (a[..., y0:y0 + crop, x0:x0 + crop] for a in (x, c, warped))
            frames.append(x)
            guides.append(composite_guide(warped, c))
            k = 2 * self.cfg.hand_dilate + 1
            hands.append(F.max_pool2d((c.amax(1, keepdim=True) > -0.94).float(), k, 1, self.cfg.hand_dilate))
        cat = [torch.cat(a).to(self.device) for a in (frames, guides, hands)]
        return cat[0], cat[1], 1.0 + self.cfg.hand_weight * cat[2], g

    def loss(self, model: Any, step: int, micro: int, rank: int, world: int) -> Tensor:
        if self.composite:
            frames, guide, weight, g = self.guided(step, micro, rank, world)
            rec, _, z = model(frames, guide, generator=g)
            return CompositeAutoencoder.reconstruction_loss(frames, rec, z, weight)
        frames = self.frames(step, micro, rank, world)
        rec, z = model(frames)
        return FrameAutoencoder.reconstruction_loss(frames, rec, z)


def _to_unit(rgb: Any) -> Tensor:
    """uint8 ``[..., H, W, 3]`` -> float ``[..., 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(rgb).movedim(-1, -3).float() / 127.5 - 1.0


@torch.no_grad()
def finalize_autoencoder(task: AutoencoderTask, final_dir: str | Path) -> dict[str, Any]:
    """Measure latent statistics, write them into ``final/config.json``; report reconstruction PSNR."""
    ae = task.model.eval()
    n = max(1, task.cfg.stats_frames // task.cfg.optim.batch_size)
    zs, psnr = [], []
    for k in range(n):
        if task.composite:
            frames, guide, _, _ = task.guided(10**6 + k, 0, 0, 1, crop=0)
        else:
            frames, guide = task.frames(10**6 + k, 0, 0, 1, crop=0), None
        z = ae.encode_frames(frames, normalize=False)
        zs.append(z.transpose(0, 1).flatten(1))
        rec = ae.decode_frames(z, guide, normalized=False).clamp(-1, 1)
        psnr.append(float(-10 * torch.log10(((rec - frames) / 2).pow(2).mean().clamp_min(1e-10))))
    z = torch.cat(zs, 1)
    cfg = dataclasses.replace(ae.config, latent_mean=tuple(z.mean(1).tolist()),
                              latent_std=tuple(z.std(1).clamp_min(1e-4).tolist()))
    save_config(cfg, Path(final_dir) / "config.json")
    return {"psnr_db": sum(psnr) / len(psnr), "latent_std": cfg.latent_std}
