"""Architecture configs: frozen dataclasses, named presets, JSON beside the weights.

Design choices:
- One ``DiTConfig`` describes every size, from the CPU ``tiny`` model to ``wan-1.3b``
  (Wan 2.1 T2V-1.3B's exact transformer shape, so its weights can initialise the teacher).
  Derived sizes (input channels, head dim, tokens per frame) are properties, never stored.
- The streaming shape (frames per block, KV-cache window and sink) lives in the same config:
  the KV cache is sized from it.
- ``AutoencoderConfig`` covers the small per-frame conv autoencoder trained here
  (``kind="conv"``) and the Wan VAE adapter (``kind="wan"``); latent normalisation
  statistics are part of it so that saved latents are unit-scale for the DiT.
- ``save_config`` / ``load_config`` write ``config.json`` with a ``"type"`` tag; loading
  rejects unknown keys (a typo fails at load, not mid-run).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "AUTOENCODER_PRESETS",
    "DIT_PRESETS",
    "AutoencoderConfig",
    "DiTConfig",
    "StreamConfig",
    "config_from_dict",
    "load_config",
    "save_config",
]


@dataclass(frozen=True)
class DiTConfig:
    """Shape of the video DiT (Wan 2.1 block layout) and of its conditioning and KV cache.

    Attributes:
        latent_channels: channels of the autoencoder latent (noisy input = output channels).
        dim: model width; ``num_heads * head_dim``.
        num_heads: attention heads.
        num_layers: transformer blocks.
        ffn_dim: feed-forward hidden width.
        freq_dim: sinusoidal timestep embedding size.
        patch_size: (t, h, w) patch of the latent.
        text_dim: text-embedding width for cross-attention; ``None`` = no cross-attention.
        eps: norm epsilon.
        rope_theta: rotary base.
        timestep_scale: the model sees ``t * timestep_scale`` (Wan: sigma in [0, 1] x 1000).
        vae_factor: spatial down-sampling of the autoencoder (pixel-unshuffle of Plücker rays).
        vae_temporal_factor: temporal down-sampling of the autoencoder (1 = per-frame).
        camera_adapter_dim: hidden width of the Plücker-ray adapter; 0 disables it.
        frames_per_block: latent frames per streaming step (block-causal unit).
        cache_window: latent frames kept in the rolling KV window (besides the sink).
        cache_sink: leading (scene) latent frames never evicted.
        latent_size: nominal latent (h, w) of the preset's training resolution.
        control_input: what the control channels carry: ``"render"`` (the mesh render: silhouette
            + wireframe, occlusion-invariant) or ``"mask"`` (the ablation: the 2-D hand mask; trained
            on visible-hand masks, fed the render's full silhouette at inference).
        scene_every_frame: the scene latent sits in the condition channels of every frame (the
            mask channel still marks the frames that are the scene itself), so a small model
            copies the background locally instead of through attention; ``False`` = Wan I2V
            style (scene latent at frame 0 only).
        scene_warp_depth: with ``scene_every_frame``, the scene latent of each frame is first warped
            into that frame's camera through the homography of a fronto-parallel plane this many
            metres in front of the scene camera (``warp_scene_latent``); a depth-free geometric prior
            (rotation exact, translation approximate) that leaves the model the parallax, the hands
            and what they move. 0 = no warp (the scene as photographed, for every frame).
    """

    latent_channels: int = 8
    dim: int = 192
    num_heads: int = 3
    num_layers: int = 6
    ffn_dim: int = 512
    freq_dim: int = 64
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dim: int | None = None
    eps: float = 1e-6
    rope_theta: float = 10000.0
    timestep_scale: float = 1000.0
    vae_factor: int = 8
    vae_temporal_factor: int = 1
    camera_adapter_dim: int = 128
    frames_per_block: int = 1
    cache_window: int = 8
    cache_sink: int = 1
    latent_size: tuple[int, int] = (16, 16)
    scene_every_frame: bool = False
    control_input: str = "render"
    scene_warp_depth: float = 0.0

    def __post_init__(self) -> None:
        if self.scene_warp_depth < 0 or (self.scene_warp_depth and not self.scene_every_frame):
            raise ValueError(f"scene_warp_depth must be >= 0 and needs scene_every_frame, got {self.scene_warp_depth}")
        if self.control_input not in ("render", "mask"):
            raise ValueError(f"control_input must be 'render' or 'mask', got {self.control_input!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or (self.head_dim - 4 * (self.head_dim // 6)) % 2:
            raise ValueError(f"head_dim {self.head_dim} must split into even (t, h, w) rotary parts")
        for name in ("patch_size", "latent_size"):  # JSON gives lists; keep tuples (hashable, frozen)
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def in_channels(self) -> int:
        """Channel concat: noisy latents + control latents + scene latents + scene mask."""
        return 3 * self.latent_channels + 1

    @property
    def out_channels(self) -> int:
        return self.latent_channels

    def tokens_per_frame(self, latent_hw: tuple[int, int] | None = None) -> int:
        h, w = latent_hw or self.latent_size
        return (h // self.patch_size[1]) * (w // self.patch_size[2])


@dataclass(frozen=True)
class AutoencoderConfig:
    """The video autoencoder.

    Attributes:
        kind: ``"conv"`` (small per-frame conv autoencoder trained here), ``"composite"`` (per-frame
            encoder; a decoder that composites over the scene photo warped into the frame's camera,
            ``hand2world.models.composite``: the shipped default) or ``"wan"`` (diffusers
            ``AutoencoderKLWan``; its own config sits beside its weights).
        latent_channels: latent channels.
        channels: conv widths per resolution level; ``len(channels)`` stride-2 steps, so the
            spatial factor is ``2 ** len(channels)`` (3 levels = x8).
        blocks_per_level: residual blocks per level.
        latent_mean, latent_std: per-channel normalisation (set after training); the DiT
            sees ``(z - mean) / std``.
        temporal_factor: 1 for the per-frame autoencoder, 4 for the Wan VAE.
        pretrained: folder of the Wan VAE weights (``kind="wan"``), resolved through
            ``hand2world.paths.checkpoint_path``.
        guide_channels: (composite) widths of the guide pyramid at full, 1/2, ... 1/2**L resolution
            (``len(channels) + 1`` entries).
        guide_warp_depth: (composite) plane depth (m) of the photo's warp into each frame's camera.
        latent_noise: (composite, training) the decoder sees the latent plus Gaussian noise of up to this
            many per-channel standard deviations (uniform per frame), so it trusts the photo where a
            generated latent is unsure.
        latent_dropout: (composite, training) share of frames decoded with the latent zeroed; 1 trains the
            guide-only deterministic reference.
    """

    kind: str = "conv"
    latent_channels: int = 8
    channels: tuple[int, ...] = (32, 64, 128)
    blocks_per_level: int = 1
    latent_mean: tuple[float, ...] = ()
    latent_std: tuple[float, ...] = ()
    temporal_factor: int = 1
    pretrained: str | None = None
    guide_channels: tuple[int, ...] = ()
    guide_warp_depth: float = 0.5
    latent_noise: float = 0.0
    latent_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("channels", "latent_mean", "latent_std", "guide_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind not in ("conv", "composite", "wan"):
            raise ValueError(f"unknown autoencoder kind {self.kind!r}")
        if self.kind == "composite":
            if len(self.guide_channels) != len(self.channels) + 1:
                raise ValueError(f"a composite autoencoder needs len(channels) + 1 = {len(self.channels) + 1} "
                                 f"guide_channels, got {self.guide_channels}")
            if self.guide_warp_depth <= 0:
                raise ValueError(f"guide_warp_depth must be > 0, got {self.guide_warp_depth}")
        if self.latent_noise < 0 or not 0.0 <= self.latent_dropout <= 1.0:
            raise ValueError(f"latent_noise must be >= 0 and latent_dropout in [0, 1], got {self.latent_noise}, "
                             f"{self.latent_dropout}")

    @property
    def trained_here(self) -> bool:
        """Weights trained here and stored beside the video model (conv, composite); the Wan VAE is referenced."""
        return self.kind in ("conv", "composite")

    @property
    def needs_guide(self) -> bool:
        """Decoding needs the warped photo and the control render (``kind="composite"``)."""
        return self.kind == "composite"

    @property
    def spatial_factor(self) -> int:
        return 8 if self.kind == "wan" else 2 ** len(self.channels)


@dataclass(frozen=True)
class StreamConfig:
    """How a causal student is sampled when streaming (saved as ``stream.json`` beside its weights).

    Attributes:
        steps: denoising steps per block (1-4 for a distilled student).
        shift: timestep shift of the few-step schedule (``stream.rollout.student_timesteps``).
        stochastic: re-noise with fresh noise between steps (DMD-style) or follow the ODE.
        context_t: noise level at which a generated block is committed to the KV cache.
        guidance_hands, guidance_camera: classifier-free guidance scales (1 = off; a distilled
            student has guidance baked in).
    """

    steps: int = 4
    shift: float = 1.0
    stochastic: bool = True
    context_t: float = 0.0
    guidance_hands: float = 1.0
    guidance_camera: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be in [1, 1000], got {self.steps}")
        if not 0.0 <= self.context_t < 1.0:
            raise ValueError(f"context_t must be in [0, 1), got {self.context_t}")


DIT_PRESETS: dict[str, DiTConfig] = {
    # Ships; CPU. 128x128 frames -> 16x16x8 latents -> 64 tokens/frame.
    "tiny": DiTConfig(scene_every_frame=True, scene_warp_depth=0.5),
    # A GPU model at 256x256 (32x32 latents -> 256 tokens/frame).
    "small": DiTConfig(latent_channels=16, dim=512, num_heads=8, num_layers=12, ffn_dim=2048, freq_dim=256,
                       camera_adapter_dim=256, latent_size=(32, 32)),
    # Wan 2.1 T2V-1.3B transformer shape (Wan VAE: 16 channels, x8 space, x4 time; umT5 text 4096).
    "wan-1.3b": DiTConfig(latent_channels=16, dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, freq_dim=256,
                          text_dim=4096, vae_temporal_factor=4, camera_adapter_dim=512, frames_per_block=3,
                          cache_window=9, latent_size=(60, 104)),
}

AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    # Ships (CPU): widths 32/64/128, 1.29 M.
    "tiny": AutoencoderConfig(),
    # Lighter (0.33 M, ~2.5x cheaper): measured 19.5 dB video / 19.1 dB control reconstruction on
    # held-out clips after 1,000 steps vs tiny's 22.6 / 32.8 dB; tiny's encode + decode fit the CPU
    # frame budget (channels_last), so tiny ships.
    "nano": AutoencoderConfig(channels=(16, 32, 64)),
    "small": AutoencoderConfig(latent_channels=16, channels=(64, 128, 256), blocks_per_level=2),
    # Ships (CPU, v5): 256x256 frames -> 16x16x8 latents (x16), decoded over the warped scene photo.
    "composite": AutoencoderConfig(kind="composite", channels=(16, 24, 48, 96), guide_channels=(8, 8, 16, 32, 64),
                                   latent_noise=0.5),
    # The deterministic reference: the same decoder from the warped photo and the control render alone.
    "composite-guide-only": AutoencoderConfig(kind="composite", channels=(16, 24, 48, 96),
                                              guide_channels=(8, 8, 16, 32, 64), latent_dropout=1.0),
    # GPU: 512x512 -> 32x32x16 (the same design, wider).
    "composite-small": AutoencoderConfig(kind="composite", latent_channels=16, channels=(32, 64, 128, 256),
                                         guide_channels=(16, 32, 32, 64, 128), latent_noise=0.5),
    "wan": AutoencoderConfig(kind="wan", latent_channels=16, channels=(), temporal_factor=4),
}

_TYPES: dict[str, type] = {"DiTConfig": DiTConfig, "AutoencoderConfig": AutoencoderConfig,
                           "StreamConfig": StreamConfig}


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**data)


def save_config(config: Any, path: str | Path) -> Path:
    """Write a config dataclass as JSON (with a ``"type"`` tag)."""
    path = Path(path)
    data = {"type": type(config).__name__, **dataclasses.asdict(config)}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_config(path: str | Path) -> Any:
    """Read a config written by ``save_config``."""
    data = json.loads(Path(path).read_text())
    kind = data.pop("type", None)
    if kind not in _TYPES:
        raise ValueError(f"{path}: unknown config type {kind!r}")
    return config_from_dict(_TYPES[kind], data)
