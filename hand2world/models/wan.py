"""Wan 2.1 interoperability: transformer state-dict mapping and the Wan VAE adapter.

Design choices:
- Our ``DiT`` uses the original Wan 2.1 checkpoint names; diffusers' ``WanTransformer3DModel``
  renames them. ``WAN_DIFFUSERS_TO_OURS`` is the documented, complete rename table (regular
  expressions, applied in order); ``from_diffusers_state_dict`` converts and reports unused
  keys.
- ``init_from_wan`` loads Wan weights into a DiT whose input is wider (our concatenated
  conditions): Wan's patch-embedding kernel fills the noisy-latent channels and the extra
  channels start at zero, so the initialised teacher computes exactly Wan's function
  (the Plücker adapter is zero-initialised too).
- ``WanVAE`` wraps diffusers' ``AutoencoderKLWan`` behind the same interface as the conv
  autoencoder (``encode`` / ``decode`` on ``[B, 3, T, H, W]`` in [-1, 1], normalised latents).
  Weights come from a local folder resolved through ``hand2world.paths.checkpoint_path``;
  nothing is downloaded. Imports of diffusers are lazy (optional ``wan`` extra).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["WAN_DIFFUSERS_TO_OURS", "WanVAE", "from_diffusers_state_dict", "init_from_wan"]

# diffusers WanTransformer3DModel key -> our DiT key (regex, replacement); first match wins.
WAN_DIFFUSERS_TO_OURS: tuple[tuple[str, str], ...] = (
    (r"^patch_embedding\.", "patch_embedding."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^blocks\.(\d+)\.attn1\.to_q\.", r"blocks.\1.self_attn.q."),
    (r"^blocks\.(\d+)\.attn1\.to_k\.", r"blocks.\1.self_attn.k."),
    (r"^blocks\.(\d+)\.attn1\.to_v\.", r"blocks.\1.self_attn.v."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.to_q\.", r"blocks.\1.cross_attn.q."),
    (r"^blocks\.(\d+)\.attn2\.to_k\.", r"blocks.\1.cross_attn.k."),
    (r"^blocks\.(\d+)\.attn2\.to_v\.", r"blocks.\1.cross_attn.v."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm_cross."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
)


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, repl in table:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def from_diffusers_state_dict(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a diffusers Wan transformer state dict to our keys; returns (converted, unmapped keys)."""
    out, unused = {}, []
    for key, value in state.items():
        new = _rename(key, WAN_DIFFUSERS_TO_OURS)
        if new is None:
            unused.append(key)
        else:
            out[new] = value
    return out, unused


def init_from_wan(model: nn.Module, wan_state: dict[str, Tensor], strict: bool = True) -> list[str]:
    """Initialise our DiT from a diffusers Wan 2.1 transformer state dict.

    Wan's ``patch_embedding`` (``[dim, 16, 1, 2, 2]``) fills our first ``latent_channels`` input
    channels; control/scene/mask channels and the camera adapter keep zeros, so the result
    equals Wan on the noisy latents.

    Returns:
        Our parameter names that Wan did not provide (the conditioning additions).
    """
    converted, unused = from_diffusers_state_dict(wan_state)
    if unused:
        raise KeyError(f"Wan keys without a mapping: {unused[:8]}")
    own = model.state_dict()
    w = converted.get("patch_embedding.weight")
    if w is not None and w.shape != own["patch_embedding.weight"].shape:
        full = torch.zeros_like(own["patch_embedding.weight"])
        full[:, : w.shape[1]] = w
        converted["patch_embedding.weight"] = full
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected or (strict and any(not k.startswith("camera_adapter.") for k in missing)):
        raise KeyError(f"state-dict mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}")
    return list(missing)


class WanVAE(nn.Module):
    """The Wan 2.1 VAE (diffusers ``AutoencoderKLWan``) behind the autoencoder interface.

    Args:
        vae: an ``AutoencoderKLWan`` (from ``from_pretrained`` or built from a config in tests).
    """

    spatial_factor = 8
    temporal_factor = 4
    needs_guide = False

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        cfg = vae.config
        self.latent_channels = int(cfg.z_dim)
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> WanVAE:
        """Load from a local diffusers folder (``config.json`` + weights), e.g. Wan2.1 ``vae/``."""
        try:
            from diffusers import AutoencoderKLWan
        except ImportError as exc:  # pragma: no cover - the wan extra is part of dev
            raise ImportError("the Wan VAE needs diffusers: pip install -e .[wan]") from exc
        from hand2world.paths import checkpoint_path

        return cls(AutoencoderKLWan.from_pretrained(str(checkpoint_path(path)), torch_dtype=dtype))

    def encode(self, video: Tensor) -> Tensor:
        """``[B, 3, T, H, W]`` in [-1, 1], T = 1 + 4k -> normalised latents ``[B, C, 1 + k, H/8, W/8]``."""
        z = self.vae.encode(video).latent_dist.mode()
        return (z - self.mean.to(z.dtype)) / self.std.to(z.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents ``[B, C, t, h, w]`` -> video ``[B, 3, 1 + 4(t-1), 8h, 8w]`` in [-1, 1]."""
        z = latents * self.std.to(latents.dtype) + self.mean.to(latents.dtype)
        return self.vae.decode(z).sample.clamp(-1, 1)
