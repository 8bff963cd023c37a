"""The base of the per-frame autoencoders (``FrameAutoencoder``, ``CompositeAutoencoder``).

Rules: time is folded into the batch (a clip's latents are its frames' latents, so streaming decode
never touches history); latents are normalised by per-channel statistics stored in the config; a
decode may take a guide (the warped scene photo and the control render) that only autoencoders with
``needs_guide`` read.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hand2world.models.config import AutoencoderConfig

__all__ = ["PerFrameAutoencoder", "ResBlock", "group_norm"]


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    """GroupNorm + SiLU + 3x3 conv, twice, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  group_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class PerFrameAutoencoder(nn.Module):
    """What every per-frame autoencoder shares: latent normalisation, per-frame encode, clip-level encode/decode.

    Subclasses set ``encoder`` and implement ``decode_frames(z, guide=None, normalized=True)``; ``guide``
    (``[N, 6, H, W]``: the warped scene photo and the control render) is read only by autoencoders whose
    ``needs_guide`` is True and ignored by the others, so callers pass it whenever they have it.
    """

    temporal_factor = 1
    needs_guide = False
    encoder: nn.Module

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.latent_channels
        mean = torch.tensor(config.latent_mean or [0.0] * c).view(1, c, 1, 1)
        std = torch.tensor(config.latent_std or [1.0] * c).view(1, c, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @property
    def spatial_factor(self) -> int:
        return self.config.spatial_factor

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encode_frames(self, frames: Tensor, normalize: bool = True) -> Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> ``[N, C, H/s, W/s]`` (normalised unless ``normalize=False``)."""
        z = self.encoder(frames)
        return (z - self.mean) / self.std if normalize else z

    def decode_frames(self, z: Tensor, guide: Tensor | None = None, normalized: bool = True) -> Tensor:
        """``[N, C, h, w]`` (+ guide ``[N, 6, H, W]``) -> ``[N, 3, H, W]`` in [-1, 1]: each subclass's own decoder."""
        raise NotImplementedError(f"{type(self).__name__} must define decode_frames (abstract in the base)")

    def encode(self, video: Tensor) -> Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1] -> normalised latents ``[B, C, T, H/s, W/s]``."""
        b, _, t = video.shape[:3]
        z = self.encode_frames(video.transpose(1, 2).flatten(0, 1))
        return z.unflatten(0, (b, t)).transpose(1, 2)

    def decode(self, latents: Tensor, guide: Tensor | None = None) -> Tensor:
        """Normalised latents ``[B, C, T, h, w]`` (+ guide ``[B, 6, T, H, W]``) -> ``[B, 3, T, H, W]`` in [-1, 1]."""
        b, _, t = latents.shape[:3]
        g = None if guide is None else guide.transpose(1, 2).flatten(0, 1)
        x = self.decode_frames(latents.transpose(1, 2).flatten(0, 1), g)
        return x.unflatten(0, (b, t)).transpose(1, 2)
