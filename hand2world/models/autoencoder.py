"""Small per-frame conv autoencoder: the shipped default latent space of the video model.

Design choices:
- Per-frame 2-D convolutions (time folded into the batch): streaming decode never touches
  history (each new latent frame decodes alone), and clip latents are per-frame latents
  concatenated, so training can cache whole-clip latents and crop them in time.
- ``len(channels)`` stride-2 levels (3 = x8: 128x128 -> 16x16), residual blocks (GroupNorm +
  SiLU + 3x3 conv) only below full resolution (encoder: after each down-sampling; decoder:
  before each nearest up-sampling + conv), no attention: both directions stay cheap on CPU.
- Deterministic autoencoder (no KL): trained with L1 + MSE reconstruction and a small latent
  L2 penalty; per-channel mean/std measured after training are stored in the config and
  applied by ``encode``/``decode`` so the DiT sees unit-scale latents.
- Same interface as ``WanVAE``: ``encode``/``decode`` on ``[B, 3, T, H, W]`` in [-1, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hand2world.models.config import AutoencoderConfig
from hand2world.models.per_frame import PerFrameAutoencoder, ResBlock, group_norm

__all__ = ["FrameAutoencoder", "PerFrameAutoencoder", "build_autoencoder"]


class Encoder(nn.Module):
    """Stride-2 conv then residual blocks per level: no residual block at full resolution (CPU cost)."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        ch = config.channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        prev = ch[0]
        for c in ch:
            layers.append(nn.Conv2d(prev, c, 3, stride=2, padding=1))
            layers += [ResBlock(c) for _ in range(config.blocks_per_level)]
            prev = c
        layers += [group_norm(prev), nn.SiLU(), nn.Conv2d(prev, config.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        ch = config.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, ch[0], 3, padding=1), ResBlock(ch[0])]
        for i, c in enumerate(ch):
            layers += [ResBlock(c) for _ in range(config.blocks_per_level)]
            nxt = ch[min(i + 1, len(ch) - 1)] if i + 1 < len(ch) else ch[-1] // 2
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, nxt, 3, padding=1)]
        layers += [group_norm(ch[-1] // 2), nn.SiLU(), nn.Conv2d(ch[-1] // 2, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class FrameAutoencoder(PerFrameAutoencoder):
    """Per-frame conv autoencoder (decodes from the latent alone).

    Args:
        config: ``AutoencoderConfig`` with ``kind="conv"``.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def decode_frames(self, z: Tensor, guide: Tensor | None = None, normalized: bool = True) -> Tensor:
        """``[N, C, h, w]`` -> ``[N, 3, h*s, w*s]`` in [-1, 1] (``guide`` unused)."""
        if normalized:
            z = z * self.std + self.mean
        return self.decoder(z).clamp(-1, 1) if not self.training else self.decoder(z)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Training pass: ``[N, 3, H, W]`` -> (reconstruction ``[N, 3, H, W]``, raw latent ``[N, C, h, w]``)."""
        z = self.encoder(frames)
        return self.decoder(z), z

    @staticmethod
    def reconstruction_loss(frames: Tensor, rec: Tensor, z: Tensor, latent_weight: float = 1e-4) -> Tensor:
        """L1 + MSE reconstruction plus a small latent L2 penalty (keeps the latent scale bounded)."""
        return F.l1_loss(rec, frames) + F.mse_loss(rec, frames) + latent_weight * z.pow(2).mean()


def build_autoencoder(config: AutoencoderConfig) -> nn.Module:
    """The autoencoder a config names (``conv`` here; ``wan`` loads its pretrained folder)."""
    if config.kind == "conv":
        return FrameAutoencoder(config)
    if config.kind == "composite":
        from hand2world.models.composite import CompositeAutoencoder

        return CompositeAutoencoder(config)
    from hand2world.models.wan import WanVAE

    if not config.pretrained:
        raise ValueError("a Wan autoencoder config needs `pretrained` (a local diffusers VAE folder)")
    return WanVAE.from_pretrained(config.pretrained)
