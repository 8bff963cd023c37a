"""Clip windows in a DiT's latent space with their conditions: the one batch code of every video-model job.

Teacher training, ODE-pair generation and DMD of the student all read their micro-batches through
``LatentWindows``.

Design choices:
- With a per-frame autoencoder, whole-clip latents of video and control are encoded once per
  clip and cached (in memory, and on disk between jobs: ``latent_cache_dir``); windows are then
  cropped in latent space and the CPU spends its time on the DiT. Temporal autoencoders (Wan)
  encode each window on the fly.
- One window = ``data.frames`` frames: clean video latents, control latents, the window's first
  frame as the scene (``scene_channels``), Plücker rays relative to the window's first camera,
  and the hand coverage of each latent cell (``hand_coverage``, for hand-weighted losses).
  No condition dropout here (tasks add it).
- A clip with a scene photo (the first camera's hands-free view, ``ClipSource``'s ``scene_photo``)
  is used as live streaming uses a photo: the window's frame 0 is the photo's latent with the empty
  control (the latent of a black control image) and the scene camera, and the frames after it are
  ``start + 1 ..`` with cameras relative to the photo's. Other clips (annotated real video) keep their
  window's first frame as the scene.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from hand2world.models import Conditioning, rays_to_latent_frames, scene_channels, scene_latents
from hand2world.paths import runs_dir
from hand2world.train.data import ClipSource, batch_indices, step_generator

__all__ = ["LatentWindows", "WindowBatch", "hand_coverage", "latent_cache_dir"]


def latent_cache_dir(source: ClipSource, ae: nn.Module, control_input: str = "render") -> Path | None:
    """Where whole-clip latents of a per-frame autoencoder are kept on disk between jobs.

    Teacher training and both distillation stages read the same clips through the same frozen
    autoencoder; encoding them once saves most of a CPU run's data time. The folder is keyed by
    the dataset folder, the resolution and a hash of the autoencoder weights, so a retrained
    autoencoder or another dataset never reads stale latents. ``HAND2WORLD_LATENT_CACHE=0``
    turns it off; procedural datasets and temporal (Wan) autoencoders are not cached.
    """
    root = getattr(source.dataset, "root", None)
    if root is None or getattr(ae, "temporal_factor", 1) != 1 or os.environ.get("HAND2WORLD_LATENT_CACHE") == "0":
        return None
    h = hashlib.sha1(f"{Path(root).resolve()}|{source.size}".encode())
    if control_input != "render":  # (keeps the key of render-conditioned latents unchanged)
        h.update(control_input.encode())
    for name, tensor in sorted(ae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for v in (getattr(ae, "mean", None), getattr(ae, "std", None)):
        if v is not None:
            h.update(v.cpu().numpy().tobytes())
    return runs_dir() / "latent_cache" / h.hexdigest()[:16]


def hand_coverage(control: Tensor, factor: int, threshold: int = 8) -> Tensor:
    """Fraction of each latent cell's pixels covered by the control render's hands.

    Args:
        control: uint8 ``[T, H, W, 3]`` control renders (black background).
        factor: the autoencoder's spatial factor.

    Returns:
        float ``[T, H / factor, W / factor]`` in [0, 1].
    """
    mask = (control.amax(-1) > threshold).float()[:, None]
    return F.avg_pool2d(mask, factor)[:, 0]


@dataclass
class WindowBatch:
    """One micro-batch of clip windows: clean latents ``x0 [B, C, T, h, w]``, their conditions, the
    step's generator (noise, timesteps, dropout) and hand coverage ``hands [B, T, h, w]``."""

    x0: Tensor
    cond: Conditioning
    generator: torch.Generator
    hands: Tensor


class LatentWindows:
    """Clip windows in the DiT's latent space with their conditions: the one batch code of every
    video-model job (teacher training, ODE-pair generation and DMD of the student).

    Args:
        source: prepared clips (``ClipSource``).
        ae: the frozen autoencoder.
        config: the DiT's config (scene placement, temporal factor).
        device: where batches go.
    """

    def __init__(self, source: ClipSource, ae: nn.Module, config: Any, device: torch.device) -> None:
        self.source, self.ae, self.config, self.device = source, ae, config, device
        self._latents: dict[int, tuple[Tensor, Tensor]] = {}
        self._scenes: dict[int, Tensor] = {}
        self._empty: Tensor | None = None
        self.cache_dir = latent_cache_dir(source, ae, getattr(config, "control_input", "render"))

    def __len__(self) -> int:
        return len(self.source)

    @torch.no_grad()
    def clip_latents(self, i: int) -> tuple[Tensor, Tensor]:
        """Whole-clip (video, control) latents ``[C, T, h, w]`` of a per-frame autoencoder (cached)."""
        if i not in self._latents:
            path = None if self.cache_dir is None else self.cache_dir / f"{self.source.clip_id(i):07d}.safetensors"
            if path is not None and path.is_file():
                t = load_file(str(path))
                self._latents[i] = (t["video"], t["control"])
                return self._latents[i]
            c = self.source.clip(i)
            if getattr(self.config, "control_input", "render") == "mask":  # ablation: 2-D visible-hand masks
                from hand2world.render import control_silhouette

                c = {**c, "control": c["visible"] if "visible" in c else control_silhouette(c["control"])}
            out = []
            for key in ("video", "control"):
                x = torch.from_numpy(c[key]).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)[None].to(self.device)
                out.append(torch.cat([self.ae.encode(x[:, :, s:s + 16]) for s in range(0, x.shape[2], 16)], 2)[0])
            self._latents[i] = (out[0].cpu(), out[1].cpu())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                save_file({"video": self._latents[i][0].contiguous(), "control": self._latents[i][1].contiguous()},
                          str(tmp))
                os.replace(tmp, path)
        return self._latents[i]

    @torch.no_grad()
    def scene_latent(self, i: int) -> Tensor:
        """``[C, 1, h, w]``: the latent of clip ``i``'s scene photo (kept in memory)."""
        if i not in self._scenes:
            x = torch.from_numpy(self.source.clip(i)["scene"]).permute(2, 0, 1)[None, :, None]
            self._scenes[i] = self.ae.encode(x.float().div(127.5).sub(1.0).to(self.device))[0].cpu()
        return self._scenes[i]

    @torch.no_grad()
    def empty_control(self) -> Tensor:
        """``[C, 1, h, w]``: the latent of a black control image (no hands), as streaming gives the scene frame."""
        if self._empty is None:
            s = self.source.size
            self._empty = self.ae.encode(torch.full((1, 3, 1, s, s), -1.0, device=self.device))[0].cpu()
        return self._empty

    def starts(self, idx: list[int], g: torch.Generator) -> list[int]:
        """A random window start per clip (drawn from ``g``)."""
        return [int(torch.randint(0, self.source.max_start(i) + 1, (1,), generator=g)) for i in idx]

    @torch.no_grad()
    def windows(self, idx: list[int], starts: list[int]) -> tuple[Tensor, Conditioning]:
        """Clean latents ``[B, C, T, h, w]`` and conditions of windows ``(clip idx[b], start starts[b])``.

        The scene is the window's first latent frame (``scene_channels``); rays are relative to the
        window's first camera. No condition dropout (callers add it).
        """
        x0, cond, _ = self.windows_with_hands(idx, starts)
        return x0, cond

    @torch.no_grad()
    def windows_with_hands(self, idx: list[int], starts: list[int]) -> tuple[Tensor, Conditioning, Tensor]:
        """``windows`` plus the hand coverage ``[B, T, h, w]`` of the latent cells (``hand_coverage``)."""
        frames = self.source.frames
        lat, ctl, rays, hands, scenes = [], [], [], [], []
        r = self.config.vae_temporal_factor
        for i, start in zip(idx, starts, strict=True):
            clip = self.source.clip(i)
            photo = bool(clip["scene_photo"]) and getattr(self.ae, "temporal_factor", 1) == 1
            cov = hand_coverage(torch.from_numpy(clip["control"][start:start + frames]), self.ae.spatial_factor)
            if getattr(self.ae, "temporal_factor", 1) == 1:
                v_lat, c_lat = self.clip_latents(i)
                sel = self.source.window_frames(i, start)
                if photo:  # frame 0: the hands-free photo, no control; then the clip's frames after start
                    lat.append(torch.cat([self.scene_latent(i), v_lat[:, sel[1:]]], 1))
                    ctl.append(torch.cat([self.empty_control(), c_lat[:, sel[1:]]], 1))
                    cov = torch.cat([torch.zeros_like(cov[:1]), cov[1:]])
                else:
                    lat.append(v_lat[:, sel])
                    ctl.append(c_lat[:, sel])
                win_rays = self.source.rays(i, start)
            else:
                w = self.source.window(i, start)
                both = self.ae.encode(torch.stack([w["video"], w["control"]]).to(self.device)).cpu()
                lat.append(both[0])
                ctl.append(both[1])
                win_rays = w["rays"]
            rays.append(rays_to_latent_frames(win_rays[None], r)[0])
            # one pose and one coverage map per latent frame, picked as the rays are
            hands.append(cov[::r])
            rel = self.source.rel_c2w(i, start)[::r]
            scenes.append(scene_latents(self.config, lat[-1][None, :, 0].to(self.device),
                                        torch.from_numpy(clip["K"]), rel[None])[0])
        x0 = torch.stack(lat).to(self.device)
        cond = Conditioning(control=torch.stack(ctl).to(self.device),
                            scene=scene_channels(torch.stack(scenes), x0.shape[2],
                                                 every_frame=self.config.scene_every_frame),
                            rays=torch.stack(rays).to(self.device))
        return x0, cond, torch.stack(hands).to(self.device)

    @torch.no_grad()
    def sample(self, optim: Any, step: int, micro: int, rank: int, world: int) -> WindowBatch:
        """One deterministic micro-batch: clips from ``batch_indices``, starts and the returned generator
        from ``step_generator(optim.seed, step, micro, rank)``."""
        g = step_generator(optim.seed, step, micro, rank)
        idx = batch_indices(len(self.source), optim.batch_size, optim.seed, step, micro, rank, world,
                            optim.grad_accum)
        x0, cond, hands = self.windows_with_hands(idx, self.starts(idx, g))
        return WindowBatch(x0, cond, g, hands)
