"""Stages (b) + (c): distribution matching distillation on self-forcing rollouts.

Design choices:
- Self-forcing: each step the student generates the window's frames after the scene frame
  block by block with its KV cache through THE rollout (``hand2world.stream.rollout.rollout``),
  exactly as it streams: scene committed as the sink, few-step denoising per block, the block's
  output committed as clean context. Each block exits at a random denoising step (drawn per
  block, the same on every rank); only that step carries gradient, the cached context is
  detached (the rollout's contract), so memory grows with the number of blocks, not steps.
- DMD: the generated latents (with the real scene frame in front) are noised to a uniform level
  ``t ~ U(t_min, t_max)`` over the whole window, as the teacher was trained. The real score is
  the frozen bidirectional teacher (optionally with guidance), the fake score an online critic
  (the same DiT class, initialised from the teacher, bidirectional). The gradient
  ``(x0_fake - x0_real) / mean|x - x0_real|`` is applied to the generated frames through the
  surrogate loss ``0.5 ||x - sg(x - grad)||^2`` (its gradient is exactly ``grad / numel``).
- The critic learns the student's distribution with the flow loss on the detached rollout
  (``dmd.critic_steps`` updates per student micro-batch, each with fresh noise and levels), with
  its own AdamW. It is part of the task: wrapped like the student (DDP / FSDP) through the
  trainer's ``setup`` hook and saved with every checkpoint (``state_dict`` hook) for exact resume.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from hand2world.checkpoints import flatten_optimizer_state, unflatten_optimizer_state
from hand2world.diffusion import flow_loss, guided_velocity, sample_timesteps, weighted_mse
from hand2world.diffusion.flow import add_noise
from hand2world.distill.common import StudentTask
from hand2world.distill.config import DistillRunConfig
from hand2world.models import DiT
from hand2world.stream.rollout import commit_context, rollout, student_timesteps
from hand2world.train.data import step_generator
from hand2world.train.trainer import load_module_state, module_state

log = logging.getLogger(__name__)

__all__ = ["DmdTask"]


class DmdTask(StudentTask):
    """DMD of the causal student on its own rollouts (a ``run_training`` task with a critic).

    Args:
        cfg: the distillation config (``stage: dmd``).
        dataset: clip dataset (default: from the config / the teacher's data section).
        device: where the models and batches go.
    """

    def __init__(self, cfg: DistillRunConfig, dataset: Any = None, device: torch.device | str = "cpu") -> None:
        super().__init__(cfg, dataset, device)
        assert self.teacher is not None
        self.critic = DiT(self.teacher.model.config).to(self.device)
        self.critic.load_state_dict(self.teacher.model.state_dict())
        self.critic_wrapped: nn.Module = self.critic
        self.critic_opt: torch.optim.Optimizer | None = None
        self.timesteps = student_timesteps(cfg.student.steps, cfg.student.shift)
        self._metrics: dict[str, float] = {}
        log.info("DMD student from %s: steps %s, block %d, window %d, sink %d", self.init_folder,
                 [round(t, 3) for t in self.timesteps], self.config.frames_per_block, self.config.cache_window,
                 self.config.cache_sink)

    # -- trainer hooks ------------------------------------------------------------------------------
    def setup(self, info: Any = None, wrap: Any = None) -> None:
        """Wrap the critic like the student and build its optimiser (before a resume loads them)."""
        o = self.cfg.optim
        self.critic.train()
        self.critic_wrapped = wrap(self.critic) if wrap is not None else self.critic
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=self.cfg.dmd.critic_lr, betas=o.betas,
                                            weight_decay=o.weight_decay)

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Critic weights and optimiser state (tensors, JSON meta)."""
        self._require_setup()
        msd, osd = module_state(self.critic, self.critic_opt)
        if "state" not in osd:  # ranks other than 0 get empty full state dicts (only rank 0 writes)
            return {}, {}
        tensors, meta = flatten_optimizer_state(osd)
        return {**{f"critic.{k}": v for k, v in msd.items()}, **{f"critic_opt.{k}": v for k, v in tensors.items()}}, \
            {"critic_opt": meta}

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self._require_setup()
        msd = {k[len("critic."):]: v for k, v in tensors.items() if k.startswith("critic.")}
        opt = {k[len("critic_opt."):]: v for k, v in tensors.items() if k.startswith("critic_opt.")}
        load_module_state(self.critic, self.critic_opt, msd, unflatten_optimizer_state(opt, meta["critic_opt"]))

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def configs(self) -> dict[str, Any]:
        return {"stream": self.cfg.student.stream_config()}

    def _require_setup(self) -> None:
        if self.critic_opt is None:
            self.setup()

    # -- one step -----------------------------------------------------------------------------------
    def generate(self, model: Any, x0: Tensor, cond: Any, g: torch.Generator, step: int) -> Tensor:
        """Self-forcing rollout: the frames after the scene frame, ``[B, C, T-1, h, w]`` (gradient through
        each block's random exit step)."""
        s = self.cfg.student
        b, _, n_t = x0.shape[:3]
        cache = self.model.new_kv_cache(b, latent_hw=tuple(x0.shape[-2:]))
        commit_context(model, cache, x0[:, :, :1], cond.frames(0, 1))
        noise = torch.randn((b, x0.shape[1], n_t - 1, *x0.shape[-2:]), generator=g).to(x0)
        shared = step_generator(self.cfg.optim.seed + 1, step)  # the same exit steps on every rank
        exits = torch.randint(0, len(self.timesteps), ((n_t - 1) // s.block,), generator=shared).tolist()
        return rollout(model, cache, noise, cond.frames(1, n_t), self.timesteps, s.block,
                       window=self.config.cache_window, sink=self.config.cache_sink, stochastic=s.stochastic,
                       generator=g, exit_steps=exits, context_t=s.context_t)

    def loss(self, model: Any, step: int, micro: int, rank: int, world: int) -> Tensor:
        self._require_setup()
        d = self.cfg.dmd
        wb = self.windows.sample(self.cfg.optim, step, micro, rank, world)
        x0, cond, g = wb.x0, wb.cond, wb.generator
        gen = self.generate(model, x0, cond, g, step)  # [B, C, T-1, h, w], with gradient
        full = torch.cat([x0[:, :, :1], gen.detach()], 2)
        b = x0.shape[0]
        with torch.no_grad():
            t = d.t_min + (d.t_max - d.t_min) * torch.rand(b, generator=g).to(x0.device)
            xt = add_noise(full, torch.randn(full.shape, generator=g).to(full), t)
            tt = t.view(b, 1, 1, 1, 1)
            real = xt - tt * guided_velocity(self.teacher.model, xt, t, cond, d.guidance_hands, d.guidance_camera)
            fake = xt - tt * self.critic(xt, t, cond).float()
            grad = (fake - real)[:, :, 1:]
            norm = (gen.detach() - real[:, :, 1:]).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            grad = torch.nan_to_num(grad / norm)
        w = d.hand_loss_weight
        loss = 0.5 * weighted_mse(gen, gen.detach() - grad, 1.0 + w * wb.hands[:, 1:] if w else None)
        critic_loss = self.train_critic(full, cond, g)
        self._metrics = {"critic_loss": critic_loss, "dmd_grad": float(grad.abs().mean())}
        return loss

    def train_critic(self, full: Tensor, cond: Any, g: torch.Generator) -> float:
        """``dmd.critic_steps`` flow-loss updates of the critic on ``full [B, C, T, h, w]`` (detached)."""
        assert self.critic_opt is not None
        o, total = self.cfg.optim, 0.0
        for _ in range(self.cfg.dmd.critic_steps):
            t = sample_timesteps(full.shape[0], generator=g, device=full.device)
            noise = torch.randn(full.shape, generator=g).to(full)
            with torch.enable_grad():
                loss = flow_loss(self.critic_wrapped, full, cond, t, noise)
                loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), o.grad_clip)
            self.critic_opt.step()
            self.critic_opt.zero_grad(set_to_none=True)
            total += float(loss.detach())
        return total / self.cfg.dmd.critic_steps
