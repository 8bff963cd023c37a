"""The one autoregressive rollout of the block-causal DiT with its KV cache.

Used unchanged by self-forcing distillation (training, with gradients through one denoising
step per block), offline generation with a student (``hand2world generate``),
evaluation, and the live server (through ``StreamingGenerator``).

Design choices:
- Latent space only: callers encode conditions and decode outputs. No I/O.
- A block (``frames_per_block`` latent frames) is denoised in a few steps at fixed noise
  levels ``timesteps`` (e.g. ``(1.0, 0.75, 0.5, 0.25)``): each step predicts the clean block
  ``x0 = x_t - t v``; the next step's input is ``x0`` re-noised to the next level, either with
  fresh noise (``stochastic=True``, the DMD / Self-Forcing few-step sampler) or along the
  predicted ODE direction (``stochastic=False``, equals an Euler step of the flow). Denoising
  steps run with ``commit=False``, so nothing of a noisy block enters the cache.
- Context: after a block is generated, one more forward at noise level ``context_t``
  (default 0: clean) with ``commit=True`` writes the block's keys/values into the cache, as
  CausVid and Self-Forcing do. The scene frame enters the same way (``commit_context``) and
  stays as the cache's sink.
- Unbounded length at constant memory: before a block that would not fit, the cache evicts to
  ``sink`` + ``window`` frames (``KVCache.evict``).
- Gradients (self-forcing): with ``exit_step=k`` the block's steps before ``k`` run without
  gradient and step ``k`` returns its ``x0`` with gradient; the committed context is always
  detached (``KVCache.write`` keeps stored keys/values out of the graph).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from hand2world.diffusion.flow import timestep_schedule
from hand2world.models.conditioning import Conditioning
from hand2world.models.kv_cache import KVCache

__all__ = ["commit_context", "denoise_block", "rollout", "student_timesteps"]


def student_timesteps(steps: int, shift: float = 1.0) -> tuple[float, ...]:
    """The ``steps`` noise levels a few-step student denoises at, from 1 down (shifted schedule)."""
    if not 1 <= steps <= 1000:
        raise ValueError(f"steps must be in [1, 1000], got {steps}")
    return tuple(float(t) for t in timestep_schedule(steps, shift)[:-1])


def _full_t(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device)


@torch.no_grad()
def commit_context(model: Callable[..., Tensor], cache: KVCache, x0: Tensor, cond: Conditioning,
                   t: float = 0.0) -> None:
    """Write clean latents ``x0 [B, C, T, h, w]`` (one block, or the scene frame) into the cache."""
    model(x0.detach(), _full_t(x0, t), cond, kv_cache=cache, commit=True)


def denoise_block(model: Callable[..., Tensor], cache: KVCache, noise: Tensor, cond: Conditioning,
                  timesteps: Sequence[float], *, stochastic: bool = True, generator: torch.Generator | None = None,
                  exit_step: int | None = None, commit: bool = True, context_t: float = 0.0) -> Tensor:
    """Generate one block after the cached context.

    Args:
        model: the block-causal ``DiT`` (or a wrapper with its call signature).
        cache: the stream's KV cache (context; must have room for the block).
        noise: ``[B, C, Tb, h, w]`` initial noise of the block.
        cond: the block's conditions (``Tb`` frames).
        timesteps: decreasing noise levels, first usually 1.0.
        stochastic: re-noise with fresh noise between steps (else the deterministic ODE step).
        generator: randomness for re-noising.
        exit_step: return the ``x0`` predicted at this step (default: the last) — with gradient if
            grad mode is on; earlier steps run without gradient.
        commit: write the result into the cache as context.
        context_t: noise level the context is committed at.

    Returns:
        ``[B, C, Tb, h, w]`` predicted clean latents of the block.
    """
    n = len(timesteps)
    exit_step = n - 1 if exit_step is None else exit_step
    if not 0 <= exit_step < n:
        raise ValueError(f"exit_step {exit_step} outside [0, {n})")
    grad = torch.is_grad_enabled()
    x, x0 = noise, noise
    for i in range(exit_step + 1):
        t = float(timesteps[i])
        with torch.set_grad_enabled(grad and i == exit_step):
            v = model(x, _full_t(x, t), cond, kv_cache=cache, commit=False)
            x0 = x - t * v.to(x.dtype)
        if i < exit_step:
            t_next = float(timesteps[i + 1])
            if stochastic:
                eps = torch.randn(x.shape, generator=generator, device="cpu" if generator is None
                                  else generator.device).to(x)
            else:
                eps = x + (1.0 - t) * v.to(x.dtype)  # the noise the velocity implies: x_t + (1 - t) v
            x = (1.0 - t_next) * x0.detach() + t_next * eps
    if commit:
        commit_context(model, cache, x0, cond, context_t)
    return x0


def rollout(model: Callable[..., Tensor], cache: KVCache, noise: Tensor, cond: Conditioning,
            timesteps: Sequence[float], block: int, *, window: int, sink: int = 1, stochastic: bool = True,
            generator: torch.Generator | None = None, exit_steps: Sequence[int] | None = None,
            context_t: float = 0.0) -> Tensor:
    """Generate ``T`` latent frames block by block after the cache's context.

    Args:
        noise: ``[B, C, T, h, w]``, ``T`` a multiple of ``block``.
        cond: conditions of the ``T`` frames.
        block: latent frames per block.
        window, sink: eviction policy (frames kept besides the sink; sink frames never evicted).
        exit_steps: per-block exit step (self-forcing training); default: all steps.

    Returns:
        ``[B, C, T, h, w]`` generated latents (with gradient through each block's exit step).
    """
    total = noise.shape[2]
    if total % block:
        raise ValueError(f"{total} latent frames are not a multiple of the block size {block}")
    out = []
    for k, s in enumerate(range(0, total, block)):
        if cache.frames + block > cache.capacity_frames:
            cache.evict(window, sink)
        out.append(denoise_block(model, cache, noise[:, :, s:s + block], cond.frames(s, s + block), timesteps,
                                 stochastic=stochastic, generator=generator,
                                 exit_step=None if exit_steps is None else exit_steps[k], context_t=context_t))
    return torch.cat(out, dim=2)
