"""Conditioning of the video DiT: channel concat of latents, Plücker-ray adapter, dropout.

Design choices (Hand2World's recipe):
- Hands and scene enter by channel concat: ``[noisy latents, control-render latents, scene
  latents, scene mask]``. The scene (first-frame) latent sits at the frames whose mask is 1
  (frame 0 of a stream) and is zero elsewhere, as Wan's image-to-video model does; a stream's
  later blocks see the scene through attention to the cache's sink frame.
- Camera: per-pixel Plücker rays ``[B, 6, T, H, W]`` are pixel-unshuffled by the
  autoencoder's spatial factor to latent resolution (no information thrown away), patchified
  like the latents, and passed through a small MLP whose last layer is zero-initialised, then
  added to the patch tokens. At initialisation the adapter is exactly a no-op, which keeps a
  Wan-initialised teacher equal to Wan.
- Classifier-free guidance: hands (control latents zeroed) and camera (adapter output
  multiplied by 0) drop independently per sample with ``keep_*`` masks; the same masks give
  the unconditional branches at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conditioning", "PluckerAdapter", "drop_conditions", "rays_to_latent_frames", "scene_channels",
           "scene_latents", "warp_scene_latent"]


@dataclass
class Conditioning:
    """Per-frame conditions aligned with the latent frames given to ``DiT.forward``.

    Attributes:
        control: ``[B, C, T, h, w]`` control-render latents (None = no hands).
        scene: ``[B, C + 1, T, h, w]`` scene latents + mask channel (``scene_channels``); None = none.
        rays: ``[B, 6, T, h * s, w * s]`` Plücker rays at pixel resolution, one map per latent
            frame (``rays_to_latent_frames``); None = no camera.
        text: ``[B, S, text_dim]`` text embeddings (models with cross-attention); None = empty.
        keep_hands, keep_camera: ``[B]`` floats in {0, 1}; 0 drops that condition (guidance).
    """

    control: Tensor | None = None
    scene: Tensor | None = None
    rays: Tensor | None = None
    text: Tensor | None = None
    keep_hands: Tensor | None = None
    keep_camera: Tensor | None = None

    def frames(self, start: int, stop: int) -> Conditioning:
        """The conditions of latent frames ``[start, stop)`` (for block-by-block rollout)."""
        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[:, :, start:stop]
        return replace(self, control=cut(self.control), scene=cut(self.scene), rays=cut(self.rays))


def scene_channels(scene: Tensor, num_frames: int, frame_mask: Tensor | None = None,
                   every_frame: bool = False) -> Tensor:
    """Scene latent placed at masked frames (default: frame 0), plus the mask channel.

    Args:
        scene: ``[B, C, h, w]`` latent of the scene (first) frame, or ``[B, C, T, h, w]`` one per
            frame (the scene warped into each frame's camera, ``warp_scene_latent``).
        num_frames: latent frames T.
        frame_mask: ``[T]`` bool, frames that are the scene (default: only frame 0).
        every_frame: put the latent at every frame (``DiTConfig.scene_every_frame``); the mask
            channel still marks only ``frame_mask``.

    Returns:
        ``[B, C + 1, T, h, w]``.
    """
    b, c, h, w = scene.shape[0], scene.shape[1], scene.shape[-2], scene.shape[-1]
    if frame_mask is None:
        frame_mask = torch.zeros(num_frames, dtype=torch.bool, device=scene.device)
        frame_mask[0] = True
    m = frame_mask.to(scene.dtype).view(1, 1, num_frames, 1, 1)
    lat = scene if scene.ndim == 5 else scene[:, :, None].expand(b, c, num_frames, h, w)
    lat = lat.clone() if every_frame else lat * m
    return torch.cat([lat, m.expand(b, 1, num_frames, h, w)], dim=1)


def warp_scene_latent(scene: Tensor, K: Tensor, rel_c2w: Tensor, depth: float, factor: int) -> Tensor:
    """The scene latent as seen from other cameras, through a fronto-parallel plane at ``depth``.

    Each latent cell centre of frame ``j`` (pixel ``(u + 0.5) * factor``) is cast as a ray of camera
    ``j``, intersected with the plane ``z = depth`` of the scene camera, projected into the scene
    image and sampled there (bilinear, edges replicated). Rotations are exact whatever the depth;
    translations are right for points at that depth. Rays that miss the plane (pointing away from
    it) sample the nearest edge.

    Args:
        scene: ``[B, C, h, w]`` latent of the scene frame.
        K: ``[3, 3]`` or ``[B, 3, 3]`` intrinsics in pixels of the model resolution (``h * factor``).
        rel_c2w: ``[B, T, 4, 4]`` camera-to-scene-camera poses (``relative_c2w``; identity = no warp).
        depth: plane distance in metres (> 0).
        factor: autoencoder spatial factor (latent cell = ``factor`` pixels).

    Returns:
        ``[B, C, T, h, w]``.
    """
    b, c, h, w = scene.shape
    n_t = rel_c2w.shape[1]
    dev, dt = scene.device, torch.float32
    K = K.to(dev, dt).expand(b, 3, 3)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dt), torch.arange(w, device=dev, dtype=dt),
                            indexing="ij")
    pix = torch.stack([(xs + 0.5) * factor, (ys + 0.5) * factor, torch.ones_like(xs)], -1).view(1, -1, 3)
    rays = pix @ torch.linalg.inv(K).transpose(1, 2)  # [B, hw, 3] in camera j
    rel = rel_c2w.to(dev, dt)
    R, t = rel[..., :3, :3], rel[..., :3, 3]  # [B, T, 3, 3], [B, T, 3]
    d = torch.einsum("btij,bnj->btni", R, rays)  # ray directions in the scene camera
    lam = (depth - t[:, :, None, 2:3]) / d[..., 2:3].clamp_min(1e-3)
    pts = t[:, :, None] + lam * d  # [B, T, hw, 3] on the plane
    proj = torch.einsum("bij,btnj->btni", K, pts)
    uv = proj[..., :2] / proj[..., 2:3].clamp_min(1e-6)  # scene-image pixels
    grid = torch.stack([uv[..., 0] / (w * factor), uv[..., 1] / (h * factor)], -1) * 2 - 1
    grid = grid.view(b * n_t, h, w, 2).clamp(-2, 2)
    src = scene[:, None].expand(b, n_t, c, h, w).reshape(b * n_t, c, h, w)
    out = F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(b, n_t, c, h, w).transpose(1, 2).to(scene.dtype)


def scene_latents(config: Any, scene: Tensor, K: Tensor | None, rel_c2w: Tensor | None) -> Tensor:
    """What ``scene_channels`` gets for a model: the scene latent ``[B, C, h, w]``, or, when
    ``config.scene_warp_depth`` is set and poses are given, its warp into each frame's camera
    ``[B, C, T, h, w]`` (``rel_c2w [B, T, 4, 4]`` relative to the scene camera, ``K`` at model resolution)."""
    if not config.scene_warp_depth or rel_c2w is None or K is None:
        return scene
    return warp_scene_latent(scene, K, rel_c2w, config.scene_warp_depth, config.vae_factor)


def rays_to_latent_frames(rays: Tensor, temporal_factor: int) -> Tensor:
    """Pick one ray map per latent frame.

    With a causal video autoencoder of temporal factor ``r`` (Wan: 4), latent frame 0 covers
    pixel frame 0 and latent frame ``i`` covers frames ``r(i-1)+1 .. ri``; we take the last one
    (``ri``). Per-frame autoencoders (``r = 1``) keep every frame.

    Args:
        rays: ``[B, 6, T, H, W]``.
    """
    if temporal_factor == 1:
        return rays
    idx = torch.arange(0, rays.shape[2], temporal_factor, device=rays.device)
    return rays[:, :, idx]


def drop_conditions(cond: Conditioning, p_hands: float, p_camera: float, generator: torch.Generator | None = None,
                    batch: int | None = None) -> Conditioning:
    """Sample per-example keep masks for classifier-free guidance training."""
    b = batch or next(x.shape[0] for x in (cond.control, cond.scene, cond.rays) if x is not None)
    dev = next(x.device for x in (cond.control, cond.scene, cond.rays) if x is not None)
    keep_h = (torch.rand(b, generator=generator) >= p_hands).float().to(dev)
    keep_c = (torch.rand(b, generator=generator) >= p_camera).float().to(dev)
    return replace(cond, keep_hands=keep_h, keep_camera=keep_c)


class PluckerAdapter(nn.Module):
    """Plücker rays -> additive patch-token features (zero at initialisation).

    Args:
        dim: model width.
        hidden: adapter width.
        vae_factor: autoencoder spatial factor (pixel-unshuffle).
        patch_size: the DiT's (t, h, w) patch.
    """

    def __init__(self, dim: int, hidden: int, vae_factor: int, patch_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.vae_factor = vae_factor
        self.proj = nn.Conv3d(6 * vae_factor**2, hidden, kernel_size=patch_size, stride=patch_size)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, rays: Tensor) -> Tensor:
        """``[B, 6, T, H, W]`` -> ``[B, L, dim]`` with L = patch tokens of the latent grid."""
        b, c, t, h, w = rays.shape
        x = F.pixel_unshuffle(rays.transpose(1, 2).reshape(b * t, c, h, w), self.vae_factor)
        x = x.unflatten(0, (b, t)).transpose(1, 2)  # [B, 6 s^2, T, h/s, w/s]
        x = self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)
        return self.out(F.silu(x))
