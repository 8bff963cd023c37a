"""``StreamingGenerator``: uint8 frames in, uint8 frames out, through the one rollout and a rolling KV cache.

The contract of docs/architecture.md: ``from_pretrained(path_or_name="default")``, ``start(scene_rgb, K=None)``,
``step(control [T, H, W, 3] uint8, c2w [T, 4, 4]) -> frames [T, H, W, 3] uint8``, ``reset()``; with
``name``, ``mode == "generator"``, ``height``, ``width`` it is also the server's ``FrameSource``.

Design choices:
- Generation goes through ``hand2world.stream.rollout.rollout`` (the same function distillation
  and evaluation use); this class only converts pixels/poses to latents/conditions and back.
- The stream's first latent frame is the scene: encoded once at ``start``, committed clean
  (t = 0) with ``scene_channels(..., frame_mask=[True])``, the empty control (the autoencoder's
  latent of a black control image, encoded once) and the identity camera. It is the cache's
  sink (``DiTConfig.cache_sink``): never evicted. Later blocks carry
  ``scene_channels(scene, Tb, frame_mask=all False, every_frame=config.scene_every_frame)``, the
  scene warped into each frame's camera first when ``config.scene_warp_depth`` is set.
- Camera: the first ``c2w`` passed to ``step`` after ``start``/``reset`` is the scene frame's
  pose (the stream's reference camera) unless ``start(..., scene_c2w=...)`` gives it; rays of
  every frame are Plücker rays of ``inv(c2w_ref) @ c2w`` with the model-resolution ``K``.
- Rolling KV cache, allocated once per generator (``DiT.new_kv_cache``: sink + window + one
  block of frames) and reused across ``start``/``reset``: before a block that does not fit, the
  rollout evicts to ``cache_sink`` + ``cache_window`` frames, so a stream is unbounded at
  constant memory.
- Blocks: ``T`` passed to ``step`` must be a multiple of ``frames_per_block`` (a ValueError
  says so); frame-wise students (block 1, the shipped ``tiny``) accept any ``T``. Nothing is
  buffered: ``step`` always returns exactly the frames of the controls it was given.
- Streaming decode: the per-frame autoencoder decodes each new latent frame alone; history is
  never decoded again. A composite autoencoder (``needs_guide``) decodes over the scene photo warped
  into each frame's camera at output resolution (``warp_image`` through its ``guide_warp_depth``
  plane) and the frame's control render, so pixels the photo has are kept, not re-synthesised.
  Autoencoders with a temporal factor > 1 (the Wan VAE) would need a causal decode cache and raise
  ``NotImplementedError``.
- Speed: ``torch.inference_mode``; the autoencoder runs channels_last; controls without hands
  (all black) reuse the cached empty control latent instead of running the encoder; the scene
  conditions of a block are built once per stream. GPU options (guarded, CPU-safe):
  ``dtype=torch.bfloat16`` casts the model, autoencoder and cache; ``compile=True`` wraps the
  DiT in ``torch.compile`` (falls back to eager when unavailable); ``attention="auto"`` picks
  flash-attn where installed (the cached path runs without a mask).
- Stage times of the last ``step`` (encode, denoise, commit, decode; milliseconds) are kept in
  ``timings`` for the benchmark (``profile=True`` synchronises CUDA at stage boundaries).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hand2world.diffusion import guided_velocity
from hand2world.geometry import intrinsics_from_fov, plucker_rays
from hand2world.io import fit_cover
from hand2world.models.composite import composite_guide, warp_image
from hand2world.models.conditioning import Conditioning, scene_channels, scene_latents
from hand2world.models.config import StreamConfig
from hand2world.models.dit import DiT
from hand2world.render import control_silhouette
from hand2world.stream.rollout import commit_context, rollout, student_timesteps

log = logging.getLogger(__name__)

__all__ = ["StreamingGenerator"]

STAGES = ("encode", "denoise", "commit", "decode")


class StreamingGenerator:
    """Causal few-step video generation, a block at a time, with a rolling KV cache.

    Args:
        model: the block-causal student ``DiT`` (eval mode).
        autoencoder: its per-frame autoencoder (``encode_frames`` / ``decode_frames``).
        stream: sampling settings (default ``StreamConfig()``).
        height, width: output resolution (default: the config's ``latent_size`` x ``vae_factor``);
            must be multiples of ``vae_factor`` x patch size.
        seed: seed of the stream's noise (re-seeded at every ``start``/``reset``: reproducible).
        dtype: compute dtype (float32; bfloat16 for GPUs).
        compile: wrap the DiT in ``torch.compile``.
        attention: the model's attention backend (``DiT.attention_backend``), e.g. ``"auto"``; None keeps it.
        profile: synchronise CUDA at stage boundaries so ``timings`` are exact.
    """

    mode = "generator"

    def __init__(self, model: DiT, autoencoder: nn.Module, stream: StreamConfig | None = None, *,
                 height: int | None = None, width: int | None = None, seed: int = 0,
                 dtype: torch.dtype | None = None, compile: bool = False, attention: str | None = None,
                 profile: bool = False, name: str = "generator") -> None:
        cfg = model.config
        self.config, self.stream = cfg, stream or StreamConfig()
        self.name = name
        ae_t = int(getattr(autoencoder, "temporal_factor", 1))
        if cfg.vae_temporal_factor != 1 or ae_t != 1:
            raise NotImplementedError(
                f"streaming with a temporal autoencoder factor > 1 (config {cfg.vae_temporal_factor}, autoencoder "
                f"{ae_t}: the Wan VAE) needs a causal decode cache, which is not implemented; use a per-frame "
                "autoencoder (kind='conv') and vae_temporal_factor=1")
        factor = int(getattr(autoencoder, "spatial_factor", cfg.vae_factor))
        if factor != cfg.vae_factor:
            raise ValueError(f"autoencoder spatial factor {factor} != DiTConfig.vae_factor {cfg.vae_factor}")
        if self.stream.guidance_hands != 1.0 or self.stream.guidance_camera != 1.0:
            log.info("classifier-free guidance at stream time: hands %.2f, camera %.2f (extra DiT passes per step)",
                     self.stream.guidance_hands, self.stream.guidance_camera)
        unit = cfg.vae_factor * cfg.patch_size[1], cfg.vae_factor * cfg.patch_size[2]
        self.height = int(height or cfg.latent_size[0] * cfg.vae_factor)
        self.width = int(width or cfg.latent_size[1] * cfg.vae_factor)
        if self.height % unit[0] or self.width % unit[1]:
            raise ValueError(f"resolution {self.height}x{self.width} must be a multiple of {unit[0]}x{unit[1]} "
                             "(autoencoder factor x patch size)")
        self.latent_hw = (self.height // cfg.vae_factor, self.width // cfg.vae_factor)
        p = next(model.parameters())
        self.device = p.device
        self.dtype = dtype or p.dtype
        if attention is not None:  # the model's own setting (shared weights share it)
            model.attention_backend = attention
        self.model = model.to(dtype=self.dtype).eval().requires_grad_(False)
        # channels_last: oneDNN / cuDNN convolutions without layout reorders (~35% faster autoencoder on CPU)
        self.ae = autoencoder.to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
        self.ae.eval().requires_grad_(False)
        self._forward: Any = self.model
        if compile:
            try:
                self._forward = torch.compile(self.model, dynamic=True)
            except Exception as exc:  # noqa: BLE001 - torch.compile is optional; eager always works
                log.warning("torch.compile unavailable (%s); running eager", exc)
        self.timesteps = student_timesteps(self.stream.steps, self.stream.shift)
        self.cache = model.new_kv_cache(1, self.latent_hw, dtype=self.dtype)
        self.seed, self.profile = seed, profile
        self._gen = torch.Generator(device=self.device)
        self._empty: Tensor | None = None  # [1, C, h, w] latent of a black control image
        self._scene_lat: Tensor | None = None  # [1, C, h, w]
        self._scene_px: Tensor | None = None  # [1, 3, H, W] in [-1, 1]
        self._scene_conds: dict[int, Tensor] = {}
        self.K: np.ndarray = np.asarray(intrinsics_from_fov(60.0, self.height, self.width), np.float64)
        self._K_t: Tensor | None = None
        self._ref_inv: np.ndarray | None = None
        self._scene_c2w: np.ndarray | None = None
        self.frames_out = 0
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._t_model = {True: 0.0, False: 0.0}

    # ---- construction ----
    @classmethod
    def from_pretrained(cls, path_or_name: str | Path = "default", device: torch.device | str = "cpu", *,
                        steps: int | None = None, stochastic: bool | None = None, verify: bool = True,
                        **kwargs: Any) -> StreamingGenerator:
        """Load a student folder (``model.safetensors`` + ``config.json`` + ``autoencoder.*`` + ``stream.json``).

        Args:
            path_or_name: a folder, a name under ``weights/`` (``"default"``: the shipped student) or a run.
            device: torch device.
            steps, stochastic: override the folder's ``StreamConfig``.
            verify: check ``checksums.json`` when present.
            **kwargs: constructor options (``height``, ``width``, ``seed``, ``dtype``, ``compile``, ...).

        Raises:
            FileNotFoundError: no such folder (the message lists where it looked and how to get weights).
        """
        from hand2world.checkpoints import load_video_model

        model, ae, stream, _ = load_video_model(path_or_name, device, verify=verify)
        if stream is None:
            log.warning("%s has no stream.json (not a distilled student): streaming with StreamConfig() defaults",
                        path_or_name)
            stream = StreamConfig()
        over = {k: v for k, v in (("steps", steps), ("stochastic", stochastic)) if v is not None}
        return cls(model, ae, dataclasses.replace(stream, **over) if over else stream, **kwargs)

    # ---- helpers ----
    def _sync(self) -> None:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _pixels(self, frames: np.ndarray) -> Tensor:
        """uint8 ``[N, H, W, 3]`` -> ``[N, 3, H, W]`` in [-1, 1] on the device."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)  # channels_last view
        return x.to(self.dtype).div_(127.5).sub_(1.0)

    def _encode(self, frames: np.ndarray) -> Tensor:
        """uint8 ``[N, H, W, 3]`` -> latents ``[N, C, h, w]``."""
        return self.ae.encode_frames(self._pixels(frames))

    def _empty_latent(self) -> Tensor:
        if self._empty is None:
            self._empty = self._encode(np.zeros((1, self.height, self.width, 3), np.uint8))
        return self._empty

    def _rays(self, rel_c2w: np.ndarray) -> Tensor:
        """``[T, 4, 4]`` poses relative to the reference camera -> ``[1, 6, T, H, W]``."""
        rel = torch.from_numpy(rel_c2w.astype(np.float32)).to(self.device)
        rays = plucker_rays(self._K_t, rel, self.height, self.width)  # [T, 6, H, W]
        return rays.transpose(0, 1)[None].to(self.dtype)

    def _scene_cond(self, rel_c2w: np.ndarray) -> Tensor:
        """Scene channels of the generated frames with poses ``rel_c2w [T, 4, 4]`` (mask all False): built
        once per stream and block length, or per step when the scene is warped into each frame's camera
        (``DiTConfig.scene_warp_depth``)."""
        n = len(rel_c2w)
        mask = torch.zeros(n, dtype=torch.bool, device=self.device)
        if self.config.scene_warp_depth:
            rel = torch.from_numpy(rel_c2w.astype(np.float32))[None]
            return scene_channels(scene_latents(self.config, self._scene_lat, self._K_t, rel), n, mask,
                                  every_frame=self.config.scene_every_frame)
        if n not in self._scene_conds:
            self._scene_conds[n] = scene_channels(self._scene_lat, n, mask, every_frame=self.config.scene_every_frame)
        return self._scene_conds[n]

    def _guide(self, control: np.ndarray, rel_c2w: np.ndarray) -> Tensor:
        """Composite decoder guide ``[T, 6, H, W]``: the scene photo warped into each frame's camera
        (``rel_c2w [T, 4, 4]`` relative to the scene's) and the control renders ``[T, H, W, 3]``."""
        rel = torch.from_numpy(rel_c2w.astype(np.float32))[None].to(self.device)
        warped = warp_image(self._scene_px, self._K_t, rel, self.ae.config.guide_warp_depth)[0].transpose(0, 1)
        guide = composite_guide(warped.to(self.dtype), self._pixels(control))
        return guide.contiguous(memory_format=torch.channels_last)

    def _pass(self, x: Tensor, t: Tensor, cond: Conditioning, **kwargs: Any) -> Tensor:
        """One DiT pass (compiled when asked; a compiled forward that cannot compile here falls back to eager)."""
        try:
            return self._forward(x, t, cond, **kwargs)
        except Exception as exc:  # the cache commits last, so a failed compiled pass left it untouched
            if self._forward is self.model:
                raise
            log.warning("torch.compile failed (%s: %s); running eager", type(exc).__name__, exc)
            self._forward = self.model
            return self._forward(x, t, cond, **kwargs)

    def _call(self, x: Tensor, t: Tensor, cond: Conditioning, *, kv_cache: Any = None, commit: bool = False) -> Tensor:
        """The DiT as the rollout calls it, timed per kind of pass, with stream-time guidance when configured."""
        self._sync()
        t0 = time.perf_counter()
        s = self.stream
        scales = (1.0, 1.0) if commit else (s.guidance_hands, s.guidance_camera)  # commit passes: clean context
        v = guided_velocity(self._pass, x, t, cond, *scales, kv_cache=kv_cache, commit=commit)
        self._sync()
        self._t_model[commit] += time.perf_counter() - t0
        return v

    # ---- the FrameSource / StreamingGenerator contract ----
    @torch.inference_mode()
    def start(self, scene_rgb: np.ndarray, K: np.ndarray | None = None, *, scene_K: np.ndarray | None = None,
              scene_c2w: np.ndarray | None = None) -> StreamingGenerator:
        """Begin a stream on a scene photo.

        Args:
            scene_rgb: uint8 ``[H, W, 3]``, any size: resized to cover the model resolution and centre-cropped.
            K: 3x3 intrinsics in pixels of the model resolution (docs/architecture.md convention; what the server's
                control renders use). Default: ``scene_K`` adjusted by the crop/resize, else 60° horizontal FOV.
            scene_K: intrinsics in pixels of ``scene_rgb`` as given (adjusted here).
            scene_c2w: camera-to-world 4x4 of the scene photo, when known (offline generation); default:
                the first pose passed to ``step`` (the live case).
        """
        scene = np.asarray(scene_rgb)
        if scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3 or min(scene.shape[:2]) < 2:
            raise ValueError(f"scene_rgb must be uint8 [H, W, 3] (any size), got {scene.dtype} {scene.shape}")
        fitted, K_adj = fit_cover(scene, self.height, self.width, scene_K)
        if K is not None:
            K = np.asarray(K, np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all():
                raise ValueError(f"K must be a finite 3x3 matrix (pixels of {self.height}x{self.width}), "
                                 f"got shape {K.shape}")
            self.K = K
        elif K_adj is not None:
            self.K = K_adj
        else:
            self.K = np.asarray(intrinsics_from_fov(60.0, self.height, self.width), np.float64)
        self._K_t = torch.from_numpy(self.K.astype(np.float32)).to(self.device)
        self._scene_px = self._pixels(fitted[None])  # [1, 3, H, W]: the composite decoder's photo
        self._scene_lat = self.ae.encode_frames(self._scene_px)
        self._scene_conds = {}
        self.scene_rgb = fitted
        self._scene_c2w = None
        if scene_c2w is not None:
            scene_c2w = np.asarray(scene_c2w, np.float64)
            if scene_c2w.shape != (4, 4) or not np.isfinite(scene_c2w).all():
                raise ValueError(f"scene_c2w must be a finite 4x4 matrix, got shape {scene_c2w.shape}")
            self._scene_c2w = scene_c2w
        return self.reset()

    @torch.inference_mode()
    def reset(self) -> StreamingGenerator:
        """Forget the generated history; keep the scene (re-committed as the cache's first frame)."""
        self.cache.reset()
        self._ref_inv = None if self._scene_c2w is None else np.linalg.inv(self._scene_c2w)
        self.frames_out = 0
        self._gen.manual_seed(self.seed)
        if self._scene_lat is None:
            return self
        lat = self._scene_lat[:, :, None]  # [1, C, 1, h, w]
        cond = Conditioning(control=self._empty_latent()[:, :, None],
                            scene=scene_channels(self._scene_lat, 1, torch.ones(1, dtype=torch.bool,
                                                                                device=self.device)),
                            rays=self._rays(np.eye(4, dtype=np.float32)[None]))
        commit_context(self._call, self.cache, lat, cond, t=0.0)
        return self

    def _check(self, control: Any, c2w: Any) -> tuple[np.ndarray, np.ndarray]:
        if self._scene_lat is None:
            raise RuntimeError("call start(scene_rgb) before step()")
        if isinstance(control, Tensor):
            control = control.detach().cpu().numpy()
        control = np.asarray(control)
        want = f"uint8 [T, {self.height}, {self.width}, 3]"
        if control.dtype != np.uint8:
            raise ValueError(f"control must be {want}, got dtype {control.dtype}")
        if control.ndim != 4 or control.shape[1:] != (self.height, self.width, 3) or control.shape[0] < 1:
            raise ValueError(f"control must be {want}, got shape {control.shape}")
        if isinstance(c2w, Tensor):
            c2w = c2w.detach().cpu().numpy()
        c2w = np.asarray(c2w)
        t = control.shape[0]
        if c2w.shape != (t, 4, 4):
            raise ValueError(f"c2w must be float [T, 4, 4] with T = {t} (one pose per control frame), "
                             f"got shape {c2w.shape}")
        if not np.issubdtype(c2w.dtype, np.floating) or not np.isfinite(c2w).all():
            raise ValueError(f"c2w must be finite floats [T, 4, 4], got dtype {c2w.dtype}")
        fpb = self.config.frames_per_block
        if t % fpb:
            raise ValueError(f"this student generates blocks of {fpb} frames: T must be a multiple of {fpb}, got {t}")
        return control, c2w.astype(np.float64)

    @torch.inference_mode()
    def step(self, control: np.ndarray, c2w: np.ndarray) -> np.ndarray:
        """Generate the frames of the next ``T`` control renders.

        Args:
            control: uint8 ``[T, H, W, 3]`` control renders at the model resolution.
            c2w: ``[T, 4, 4]`` camera-to-world poses (the first pose after ``start``/``reset`` is the scene's).

        Returns:
            uint8 ``[T, H, W, 3]`` generated frames.
        """
        control, c2w = self._check(control, c2w)
        if self.config.control_input == "mask":  # mask-conditioned ablation: the render's full silhouette
            control = control_silhouette(control)
        n = control.shape[0]
        self._t_model = {True: 0.0, False: 0.0}
        self._sync()
        t0 = time.perf_counter()
        if self._ref_inv is None:
            self._ref_inv = np.linalg.inv(c2w[0])
        has_hands = control.reshape(n, -1).any(axis=1)
        ctl = self._empty_latent().expand(n, -1, -1, -1).clone()
        if has_hands.any():
            idx = np.flatnonzero(has_hands)
            ctl[torch.from_numpy(idx).to(self.device)] = self._encode(control[idx])
        ctl = ctl.transpose(0, 1)[None]  # [1, C, T, h, w]
        rel = self._ref_inv @ c2w
        cond = Conditioning(control=ctl, scene=self._scene_cond(rel), rays=self._rays(rel))
        noise = torch.randn(ctl.shape, generator=self._gen, device=self.device, dtype=self.dtype)
        self._sync()
        t1 = time.perf_counter()
        cfg, s = self.config, self.stream
        lat = rollout(self._call, self.cache, noise, cond, self.timesteps, cfg.frames_per_block,
                      window=cfg.cache_window, sink=cfg.cache_sink, stochastic=s.stochastic, generator=self._gen,
                      context_t=s.context_t)
        self._sync()
        t2 = time.perf_counter()
        z = lat[0].transpose(0, 1).contiguous(memory_format=torch.channels_last)  # [T, C, h, w]
        guide = self._guide(control, rel) if self.ae.needs_guide else None
        video = self.ae.decode_frames(z, guide)  # [T, 3, H, W], each latent frame decoded alone (no history)
        out = video.float().clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
        out = out.permute(0, 2, 3, 1).cpu().numpy()
        t3 = time.perf_counter()
        commit_s = self._t_model[True]
        self.timings = {"encode": (t1 - t0) * 1e3, "denoise": (t2 - t1 - commit_s) * 1e3, "commit": commit_s * 1e3,
                        "decode": (t3 - t2) * 1e3}
        self.frames_out += n
        return out

    def memory(self) -> dict[str, Any]:
        """KV-cache storage: bytes and frames (constant for the generator's life)."""
        nbytes = sum(t.numel() * t.element_size() for t in self.cache.k + self.cache.v)
        return {"kv_cache_bytes": nbytes, "cache_frames": self.cache.frames,
                "capacity_frames": self.cache.capacity_frames}
