"""Composite autoencoder: keep the photo, generate what changes.

The latent model never re-synthesises a pixel that the scene photo already has. The decoder sees,
at output resolution, the scene photo warped into the frame's camera (``warp_image``, the same
plane homography the DiT's scene latent gets) and the frame's control render, and it composites
over the warped photo::

    frame = W + alpha * (colour - W)        # W: warped photo, alpha in (0, 1), colour in [-1, 1]

so the latent only has to say where the frame departs from the photo (hands, forearms, contact,
shadows, moved objects, disocclusions, parallax the plane misses) and what is there.

Rules:
- The encoder is per-frame and unconditional (frame -> latent), as the plain conv autoencoder's:
  scene photo, control renders and training targets share one latent space, and the DiT's
  conditioning (scene latent warped per frame, control latents) is unchanged.
- The decoder is per-frame too (streaming never decodes history). Its guide is
  ``[W, C]`` (6 channels, [-1, 1], output resolution), encoded by a light strided conv pyramid whose
  levels are concatenated into the decoder at each resolution (U-Net skips from the guide, not from
  the latent encoder, so a decode needs only the latent and the guide).
- Full-resolution work is one guide conv and one decoder conv: most of the compute sits at 1/4 to
  1/16 resolution. ``alpha``'s bias starts negative (the photo is trusted until the latent says
  otherwise).
- Training augments the latent with noise (``latent_noise``, relative to each channel's spread) so
  that the decoder keeps the photo where an imperfect generated latent is unsure; a guide-only
  decoder (the deterministic reference) is the same class with ``latent_dropout = 1``.
- No I/O here; the guide is built by ``composite_guide`` from pixels the caller holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hand2world.models.config import AutoencoderConfig
from hand2world.models.per_frame import PerFrameAutoencoder, ResBlock, group_norm

__all__ = ["CompositeAutoencoder", "composite_guide", "warp_image"]


def warp_image(image: Tensor, K: Tensor, rel_c2w: Tensor, depth: float) -> Tensor:
    """The scene photo as seen from other cameras through the plane ``z = depth`` (per pixel).

    Args:
        image: ``[B, C, H, W]`` (any float range).
        K: ``[3, 3]`` or ``[B, 3, 3]`` intrinsics in pixels of ``H x W``.
        rel_c2w: ``[B, T, 4, 4]`` camera-to-scene-camera poses.
        depth: plane distance (m).

    Returns:
        ``[B, C, T, H, W]``.
    """
    from hand2world.models.conditioning import warp_scene_latent

    return warp_scene_latent(image, K, rel_c2w, depth, 1)


def composite_guide(warped: Tensor, control: Tensor) -> Tensor:
    """Decoder guide ``[N, 6, H, W]`` (or ``[B, 6, T, H, W]``): the warped photo and the control render, both
    ``[N, 3, H, W]`` (``[B, 3, T, H, W]``) in [-1, 1]."""
    return torch.cat([warped, control], 1)


class CompositeAutoencoder(PerFrameAutoencoder):
    """Per-frame encoder to a coarse latent; decoder that composites over the warped scene photo.

    Args:
        config: ``AutoencoderConfig(kind="composite")``: ``channels`` are the encoder/decoder widths at
            1/2 .. 1/2**L resolution, ``guide_channels`` the guide pyramid's widths at 1 .. 1/2**L.
    """

    needs_guide = True

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__(config)
        ch, gc, lc = config.channels, config.guide_channels, config.latent_channels
        levels = len(ch)
        # encoder: stride-2 conv per level, a residual block from 1/4 resolution down
        enc: list[nn.Module] = []
        prev = 3
        for i, c in enumerate(ch):
            enc.append(nn.Conv2d(prev, c, 3, stride=2, padding=1))
            enc += [ResBlock(c)] if i >= 1 else [nn.SiLU()]
            prev = c
        enc += [group_norm(prev), nn.SiLU(), nn.Conv2d(prev, lc, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # guide pyramid: full resolution, then stride 2 per level
        self.guide = nn.ModuleList([nn.Conv2d(6, gc[0], 3, padding=1)]
                                   + [nn.Conv2d(gc[i], gc[i + 1], 3, stride=2, padding=1) for i in range(levels)])
        # decoder: from the latent up, each level fed the guide level of its resolution
        self.z_in = nn.Conv2d(lc, ch[-1], 3, padding=1)
        self.fuse = nn.ModuleList()
        self.res = nn.ModuleList()
        widths = [gc[0], *ch]  # decoder width at level i (level 0 = full resolution)
        for i in range(levels, -1, -1):
            src = ch[-1] if i == levels else widths[i + 1]
            self.fuse.append(nn.Conv2d(src + gc[i], widths[i], 3, padding=1))
            self.res.append(ResBlock(widths[i]) if 2 <= i else nn.Identity())
        self.head = nn.Conv2d(widths[0], 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[3] = -3.0  # alpha starts near 0.05: the photo is kept

    def composite(self, z: Tensor, guide: Tensor) -> tuple[Tensor, Tensor]:
        """Raw latent ``[N, C, h, w]`` + guide ``[N, 6, H, W]`` -> (frame ``[N, 3, H, W]``, alpha ``[N, 1, H, W]``)."""
        g = [F.silu(self.guide[0](guide))]
        for conv in self.guide[1:]:
            g.append(F.silu(conv(g[-1])))
        levels = len(g) - 1
        if z.shape[-2:] != g[-1].shape[-2:]:
            raise ValueError(f"latent {tuple(z.shape[-2:])} does not match guide {tuple(guide.shape[-2:])} "
                             f"/ {self.spatial_factor}")
        h = self.z_in(z)
        for k, (fuse, res) in enumerate(zip(self.fuse, self.res, strict=True)):
            i = levels - k
            if k:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = res(F.silu(fuse(torch.cat([h, g[i]], 1))))
        out = self.head(h).contiguous()  # NCHW: per-channel planes (slices of channels_last are slow on CPU)
        warped = guide[:, :3].contiguous()
        alpha = torch.sigmoid(out[:, 3:4])
        colour = torch.tanh(out[:, :3])
        return torch.addcmul(warped, alpha, colour - warped), alpha

    def decode_frames(self, z: Tensor, guide: Tensor | None = None, normalized: bool = True) -> Tensor:
        """``[N, C, h, w]`` + guide ``[N, 6, H, W]`` (``composite_guide``) -> ``[N, 3, H, W]`` in [-1, 1]."""
        if guide is None:
            raise ValueError("the composite autoencoder decodes over the warped scene photo: pass guide "
                             "(composite_guide(warped, control))")
        if normalized:
            z = z * self.std + self.mean
        return self.composite(z, guide)[0].clamp(-1, 1)

    # ---- training ----
    def forward(self, frames: Tensor, guide: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass with latent augmentation.

        Args:
            frames: ``[N, 3, H, W]`` targets in [-1, 1].
            guide: ``[N, 6, H, W]``.

        Returns:
            (reconstruction ``[N, 3, H, W]``, alpha ``[N, 1, H, W]``, raw latent ``[N, C, h, w]``).
        """
        cfg = self.config
        z = self.encoder(frames)
        zin = z
        n = z.shape[0]
        if cfg.latent_noise:
            spread = z.detach().std(dim=(0, 2, 3), keepdim=True)
            level = torch.rand(n, 1, 1, 1, generator=generator).to(z) * cfg.latent_noise
            zin = zin + level * spread * torch.randn(z.shape, generator=generator).to(z)
        if cfg.latent_dropout:
            keep = (torch.rand(n, 1, 1, 1, generator=generator) >= cfg.latent_dropout).to(z)
            zin = zin * keep
        rec, alpha = self.composite(zin, guide)
        return rec, alpha, z

    @staticmethod
    def reconstruction_loss(frames: Tensor, rec: Tensor, z: Tensor, weight: Tensor | None = None,
                            latent_weight: float = 1e-4) -> Tensor:
        """(Weighted) L1 + MSE plus a small latent L2 penalty; ``weight [N, 1, H, W]`` per pixel."""
        err = (rec - frames).abs() + (rec - frames).pow(2)
        if weight is not None:
            err = err * weight
            return err.mean() / weight.mean() + latent_weight * z.pow(2).mean()
        return err.mean() + latent_weight * z.pow(2).mean()
