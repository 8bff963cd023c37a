"""The video DiT: one class for the bidirectional teacher and the block-causal student.

Design choices:
- Blocks follow Wan 2.1's transformer layout (adaLN modulation table + shared timestep
  projection, RMS q/k norm across heads, interleaved 3-D RoPE, optional text cross-attention,
  tanh-GELU FFN, fp32 norms), with the original Wan checkpoint names (``self_attn.q``,
  ``cross_attn``, ``ffn.0``, ``modulation``, ``head.head``), so Wan 2.1 weights load through
  the mapping in ``hand2world.models.wan``.
- Additions on top of Wan, none of which changes its function at initialisation: a wider patch
  embedding for the concatenated conditions (``Conditioning``), a zero-initialised Plücker
  adapter, per-frame timesteps ``[B, T]`` (diffusion forcing / clean cached context).
- Modes. ``causal=False``: full attention over the clip (teacher). ``causal=True``:
  block-causal mask (frame 0, the scene, is a block of its own; then a block =
  ``frames_per_block`` latent frames attends to itself and every earlier block) for training
  the student on whole clips. ``kv_cache=KVCache``: the same block-causal function
  evaluated one block at a time, keys/values of earlier blocks read from the cache;
  ``commit=True`` keeps the block as context.
- No I/O here; weights are loaded by callers (``hand2world.checkpoints``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hand2world.models.attention import attention, block_causal_mask, resolve_attention_backend
from hand2world.models.conditioning import Conditioning, PluckerAdapter
from hand2world.models.config import DiTConfig
from hand2world.models.kv_cache import KVCache
from hand2world.models.rope import RotaryEmbedding3D

__all__ = ["DiT", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``[N] -> [N, dim]`` as Wan: ``[cos, sin]``, max period 10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


def _layer_norm(x: Tensor, eps: float) -> Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``x [B, L, D]`` (fp32) with per-frame ``shift/scale [B, F, D]``, L = F * tokens per frame."""
    b, n_f = shift.shape[:2]
    x = x.view(b, n_f, -1, x.shape[-1])
    return (x * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def _gate(x: Tensor, gate: Tensor) -> Tensor:
    b, n_f = gate.shape[:2]
    return (x.float().view(b, n_f, -1, x.shape[-1]) * gate[:, :, None]).flatten(1, 2)


class _Attention(nn.Module):
    """Wan attention projections: q/k/v/o and RMS norm on q and k across heads (shared by both kinds)."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.backend = "sdpa"  # set through ``DiT.attention_backend``
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def _heads(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [B, L, D]``, ``context [B, S, D]`` -> q ``[B, H, L, D/H]``, k, v ``[B, H, S, D/H]``."""
        heads = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(2, (heads, -1)).transpose(1, 2)
        k = self.norm_k(self.k(context)).unflatten(2, (heads, -1)).transpose(1, 2)
        v = self.v(context).unflatten(2, (heads, -1)).transpose(1, 2)
        return q, k, v


class SelfAttention(_Attention):
    """Wan self-attention with RoPE; with a KV cache, keys/values of earlier blocks come from it."""

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """``x [B, L, D]`` -> ``[B, L, D]``."""
        q, k, v = self._heads(x, x)
        q, k = RotaryEmbedding3D.apply(q, *rope), RotaryEmbedding3D.apply(k, *rope)
        if cache is not None:
            k, v = cache.write(layer, k, v)
        out = attention(q, k, v, mask, self.backend)
        return self.o(out.transpose(1, 2).flatten(2))


class CrossAttention(_Attention):
    """Wan text cross-attention (no RoPE)."""

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """``x [B, L, D]``, ``context [B, S, D]`` -> ``[B, L, D]``."""
        q, k, v = self._heads(x, context)
        return self.o(attention(q, k, v, backend=self.backend).transpose(1, 2).flatten(2))


class DiTBlock(nn.Module):
    """One Wan 2.1 transformer block (adaLN: 6 modulation vectors per block)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        d, self.eps = config.dim, config.eps
        self.self_attn = SelfAttention(d, config.num_heads, config.eps)
        self.cross_attn = CrossAttention(d, config.num_heads, config.eps) if config.text_dim else None
        self.norm_cross = nn.LayerNorm(d, eps=config.eps) if config.text_dim else None
        f = config.ffn_dim
        self.ffn = nn.Sequential(nn.Linear(d, f), nn.GELU(approximate="tanh"), nn.Linear(f, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)

    def forward(self, x: Tensor, e: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None,
                context: Tensor | None, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """``x [B, L, D]``, ``e [B, F, 6, D]`` (per-frame timestep projection) -> ``[B, L, D]``."""
        mod = (self.modulation[:, None] + e.float()).unbind(2)  # 6 x [B, F, D]
        shift, scale, gate, c_shift, c_scale, c_gate = mod
        h = _modulate(_layer_norm(x, self.eps), shift, scale).type_as(x)
        x = (x.float() + _gate(self.self_attn(h, rope, mask, cache, layer), gate)).type_as(x)
        if self.cross_attn is not None and context is not None:
            n = self.norm_cross
            h = F.layer_norm(x.float(), n.normalized_shape, n.weight.float(), n.bias.float(), n.eps).type_as(x)
            x = x + self.cross_attn(h, context)
        h = _modulate(_layer_norm(x, self.eps), c_shift, c_scale).type_as(x)
        return (x.float() + _gate(self.ffn(h), c_gate)).type_as(x)


class Head(nn.Module):
    """Output: modulated LayerNorm + linear to patch pixels."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.eps = config.eps
        self.head = nn.Linear(config.dim, config.out_channels * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """``x [B, L, D]``, ``temb [B, F, D]`` -> ``[B, L, C * prod(patch)]``."""
        shift, scale = (self.modulation[:, None] + temb.float()[:, :, None]).unbind(2)
        return self.head(_modulate(_layer_norm(x, self.eps), shift, scale).type_as(x))


class DiT(nn.Module):
    """Hand- and camera-conditioned video DiT (Wan 2.1 layout).

    Args:
        config: architecture (``DIT_PRESETS[name]`` or a custom ``DiTConfig``).
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.rope = RotaryEmbedding3D(config.head_dim, config.rope_theta)
        self.patch_embedding = nn.Conv3d(config.in_channels, d, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.text_embedding = (nn.Sequential(nn.Linear(config.text_dim, d), nn.GELU(approximate="tanh"),
                                             nn.Linear(d, d)) if config.text_dim else None)
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        self.camera_adapter = (PluckerAdapter(d, config.camera_adapter_dim, config.vae_factor, config.patch_size)
                               if config.camera_adapter_dim else None)
        self.gradient_checkpointing = False  # recompute block activations in backward (large models)
        self._attention_backend = "sdpa"

    @property
    def attention_backend(self) -> str:
        """This model's attention backend (``hand2world.models.attention.BACKENDS``; default ``sdpa``)."""
        return self._attention_backend

    @attention_backend.setter
    def attention_backend(self, name: str) -> None:
        """Set the backend of every attention layer of this model (``auto``: flash where usable)."""
        self._attention_backend = resolve_attention_backend(name)
        for m in self.modules():
            if isinstance(m, _Attention):
                m.backend = self._attention_backend

    def new_kv_cache(self, batch: int, latent_hw: tuple[int, int] | None = None, capacity_frames: int | None = None,
                     dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for ``batch`` streams, sized from the config (sink + window + one block)."""
        c = self.config
        p = next(self.parameters())
        return KVCache(c.num_layers, batch, c.num_heads, c.head_dim, c.tokens_per_frame(latent_hw),
                       capacity_frames or c.cache_sink + c.cache_window + c.frames_per_block, self.rope,
                       dtype=dtype or p.dtype, device=p.device)

    def embed_input(self, x: Tensor, cond: Conditioning) -> Tensor:
        """Channel concat ``[x, control, scene + mask]`` -> ``[B, in_channels, T, h, w]``."""
        b, c, t, h, w = x.shape
        control = cond.control if cond.control is not None else x.new_zeros(b, c, t, h, w)
        if cond.keep_hands is not None:
            control = control * cond.keep_hands.view(b, 1, 1, 1, 1).to(control.dtype)
        scene = cond.scene if cond.scene is not None else x.new_zeros(b, c + 1, t, h, w)
        return torch.cat([x, control.to(x.dtype), scene.to(x.dtype)], dim=1)

    def forward(self, x: Tensor, t: Tensor, cond: Conditioning | None = None, *, causal: bool = False,
                kv_cache: KVCache | None = None, commit: bool = False) -> Tensor:
        """Predict the flow velocity.

        Args:
            x: ``[B, C, T, h, w]`` noisy latents (with a KV cache: the frames of the current block).
            t: ``[B]`` or ``[B, T]`` noise levels in [0, 1] (1 = pure noise).
            cond: conditions aligned with ``x``'s frames.
            causal: block-causal attention over the given frames (ignored with a cache, which is
                always block-causal).
            kv_cache: streaming context; ``x`` is one block appended at ``kv_cache.next_position``.
            commit: keep this block in the cache as context for later blocks.

        Returns:
            ``[B, C, T, h, w]`` velocity (``noise - clean``).
        """
        cfg = self.config
        cond = cond or Conditioning()
        b, _, n_t, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        gf, gh, gw = n_t // pt, h // ph, w // pw
        tokens = self.patch_embedding(self.embed_input(x, cond)).flatten(2).transpose(1, 2)  # [B, L, D]
        if self.camera_adapter is not None and cond.rays is not None:
            cam = self.camera_adapter(cond.rays)
            if cond.keep_camera is not None:
                cam = cam * cond.keep_camera.view(b, 1, 1).to(cam.dtype)
            tokens = tokens + cam.to(tokens.dtype)

        # Timesteps: one per latent frame group -> [B, F, D] embeddings, [B, F, 6, D] projections.
        t = t.to(x.device).float()
        t = t[:, None] if t.ndim == 1 else t[:, ::pt]
        temb = self.time_embedding(timestep_embedding((t * cfg.timestep_scale).flatten(), cfg.freq_dim))
        temb = temb.unflatten(0, t.shape)
        e = self.time_projection(temb).unflatten(2, (6, -1))

        start = kv_cache.next_position if kv_cache is not None else 0
        frame_pos = torch.arange(start, start + gf, device=x.device)
        rope = self.rope.tables(frame_pos, gh, gw)
        mask = None
        if causal or kv_cache is not None:
            per_frame = gh * gw
            if kv_cache is not None:  # one block per call; cached frames are earlier blocks: always visible
                q_blocks = torch.zeros(gf * per_frame, dtype=torch.long, device=x.device)
                k_blocks = torch.cat([q_blocks.new_full((kv_cache.length,), -1), q_blocks])
            else:  # frame 0 (the scene) is a block of its own, then blocks of frames_per_block
                fpb = cfg.frames_per_block
                q_blocks = (torch.arange(gf, device=x.device) + fpb - 1).div(fpb, rounding_mode="floor")
                k_blocks = q_blocks = q_blocks.repeat_interleave(per_frame)
            mask = block_causal_mask(q_blocks, k_blocks)
            if bool(mask.all()):
                mask = None

        context = None
        if self.text_embedding is not None:
            text = cond.text if cond.text is not None else tokens.new_zeros(b, 1, cfg.text_dim)
            context = self.text_embedding(text.to(tokens.dtype))

        for i, block in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training and kv_cache is None and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e, rope, mask, context, use_reentrant=False)
            else:
                tokens = block(tokens, e, rope, mask, context, kv_cache, i)
        if kv_cache is not None and commit:
            kv_cache.commit(gf)

        out = self.head(tokens, temb)  # [B, L, C * pt * ph * pw]
        out = out.view(b, gf, gh, gw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return out.reshape(b, -1, gf * pt, gh * ph, gw * pw)
