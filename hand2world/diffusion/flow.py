"""Rectified flow: noising, timestep sampling, the velocity loss and the Euler sampler.

Design choices:
- Convention (Wan / SD3): ``x_t = (1 - t) x_0 + t eps`` with ``t = 1`` pure noise; the model
  predicts the velocity ``v = eps - x_0``; sampling integrates ``dx/dt = v`` from t = 1 to 0.
- Training timesteps are logit-normal (``sigmoid(N(mean, std))``) then shifted,
  ``t' = s t / (1 + (s - 1) t)`` (shift > 1 spends more steps at high noise, as larger
  latents need); the sampler's schedule uses the same shift, so training and sampling agree.
- Per-frame timesteps are supported everywhere (``t [B]`` or ``[B, T]``): diffusion forcing
  and clean cached context use them; the teacher trains with one t per clip.
- Guidance combines branches with independent condition drops:
  ``v = v_c + (g_h - 1)(v_c - v_no_hands) + (g_c - 1)(v_c - v_no_camera)``; a branch runs only
  when its scale differs from 1.
- Randomness comes from an explicit ``torch.Generator`` (exact resume, reproducible tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from hand2world.models.conditioning import Conditioning

__all__ = ["add_noise", "euler_sample", "flow_loss", "guided_velocity", "sample_timesteps", "shift_timesteps",
           "timestep_schedule", "weighted_mse"]


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """Resolution shift ``s t / (1 + (s - 1) t)`` (identity for s = 1)."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(batch: int, shift: float = 1.0, mean: float = 0.0, std: float = 1.0,
                     generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """Logit-normal timesteps in (0, 1), shifted: ``[batch]``."""
    u = torch.randn(batch, generator=generator) * std + mean
    return shift_timesteps(torch.sigmoid(u), shift).to(device)


def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``(1 - t) x0 + t noise`` with ``t [B]`` or ``[B, T]`` broadcast over ``[B, C, T, h, w]``."""
    tt = t.view(t.shape[0], 1, 1, 1, 1) if t.ndim == 1 else t[:, None, :, None, None]
    return (1 - tt) * x0 + tt * noise


def flow_loss(model: Callable[..., Tensor], x0: Tensor, cond: Conditioning, t: Tensor, noise: Tensor,
              causal: bool = False, weight: Tensor | None = None) -> Tensor:
    """Mean squared error between predicted and true velocity ``noise - x0``.

    Args:
        model: ``DiT`` (or a wrapped one): ``model(x_t, t, cond, causal=...) -> v``.
        x0: clean latents ``[B, C, T, h, w]``.
        t: ``[B]`` or ``[B, T]`` noise levels.
        noise: ``[B, C, T, h, w]`` standard normal.
        weight: ``[B, T, h, w]`` per-cell loss weights (e.g. heavier on the hands), or None; the
            loss is then the weighted mean ``sum(w err) / sum(w)`` over cells and channels.
    """
    v = model(add_noise(x0, noise, t), t, cond, causal=causal)
    return weighted_mse(v, noise - x0, weight)


def weighted_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """``mean((pred - target)^2)`` over ``[B, C, T, h, w]``, or with per-cell ``weight [B, T, h, w]`` the
    weighted mean ``sum(w err) / sum(w)`` over cells and channels (fp32)."""
    err = (pred.float() - target.float()).pow(2)
    if weight is None:
        return err.mean()
    w = weight.float()[:, None].expand_as(err)
    return (err * w).sum() / w.sum()


def timestep_schedule(steps: int, shift: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """``steps + 1`` decreasing noise levels from 1 to 0 (shifted)."""
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


def guided_velocity(model: Callable[..., Tensor], x: Tensor, t: Tensor, cond: Conditioning,
                    guidance_hands: float = 1.0, guidance_camera: float = 1.0, **kwargs: object) -> Tensor:
    """Classifier-free guidance: ``v_c + (g_h - 1)(v_c - v_no_hands) + (g_c - 1)(v_c - v_no_camera)``.

    The one place guidance is combined (teacher sampling, ODE pairs, DMD's real score, stream-time
    guidance). The conditional pass keeps every condition (``keep_*`` cleared); a branch runs only
    when its scale differs from 1. ``kwargs`` go to every pass (``causal``, ``kv_cache``, ``commit``).

    Args:
        model: ``model(x, t, cond, **kwargs) -> v``.
        x: ``[B, C, T, h, w]``; ``t``: ``[B]`` or ``[B, T]``.
    """
    v = model(x, t, dataclasses.replace(cond, keep_hands=None, keep_camera=None), **kwargs)
    b = x.shape[0]
    ones, zeros = x.new_ones(b), x.new_zeros(b)
    out = v
    for scale, keep_h, keep_c in ((guidance_hands, zeros, ones), (guidance_camera, ones, zeros)):
        if scale != 1.0:
            out = out + (scale - 1.0) * (v - model(x, t, dataclasses.replace(cond, keep_hands=keep_h,
                                                                             keep_camera=keep_c), **kwargs))
    return out


@torch.no_grad()
def euler_sample(model: Callable[..., Tensor], noise: Tensor, cond: Conditioning, steps: int = 20,
                 shift: float = 1.0, guidance_hands: float = 1.0, guidance_camera: float = 1.0,
                 causal: bool = False, on_step: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Integrate the flow from noise to clean latents with Euler steps.

    Args:
        model: ``model(x_t, t [B], cond, causal=...) -> v``.
        noise: ``[B, C, T, h, w]`` initial noise.
        cond: conditions (a scene latent, if any, enters through ``cond.scene``).
        steps: Euler steps.
        shift: timestep shift of the schedule.
        guidance_hands, guidance_camera: classifier-free guidance scales (1 = off).
        on_step: called as ``on_step(i, x_i)`` with the state before step ``i`` (trajectories).

    Returns:
        ``[B, C, T, h, w]`` clean latents.
    """
    sched = timestep_schedule(steps, shift, noise.device)
    x = noise
    for i in range(steps):
        if on_step is not None:
            on_step(i, x)
        v = guided_velocity(model, x, sched[i].expand(x.shape[0]), cond, guidance_hands, guidance_camera,
                            causal=causal)
        x = x + (sched[i + 1] - sched[i]) * v
    return x
