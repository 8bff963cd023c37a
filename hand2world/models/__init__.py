"""hand2world.models: autoencoders, the video DiT (bidirectional or block-causal), conditioning, KV cache.

Heavy optional pieces (the Wan VAE through diffusers) import lazily from ``hand2world.models.wan``.
"""

from hand2world.models.attention import attention, available_backends, resolve_attention_backend
from hand2world.models.autoencoder import FrameAutoencoder, build_autoencoder
from hand2world.models.conditioning import (
    Conditioning,
    PluckerAdapter,
    drop_conditions,
    rays_to_latent_frames,
    scene_channels,
    scene_latents,
    warp_scene_latent,
)
from hand2world.models.config import (
    AUTOENCODER_PRESETS,
    DIT_PRESETS,
    AutoencoderConfig,
    DiTConfig,
    StreamConfig,
    load_config,
    save_config,
)
from hand2world.models.dit import DiT
from hand2world.models.kv_cache import KVCache

__all__ = [
    "AUTOENCODER_PRESETS",
    "DIT_PRESETS",
    "AutoencoderConfig",
    "Conditioning",
    "DiT",
    "DiTConfig",
    "FrameAutoencoder",
    "KVCache",
    "PluckerAdapter",
    "StreamConfig",
    "attention",
    "available_backends",
    "build_autoencoder",
    "drop_conditions",
    "load_config",
    "rays_to_latent_frames",
    "resolve_attention_backend",
    "save_config",
    "scene_channels",
    "scene_latents",
    "warp_scene_latent",
]
