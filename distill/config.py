"""Distillation run config: one YAML for both stages, validated once into frozen dataclasses.

Design choices:
- One file describes the whole distillation (``configs/distill_tiny.yaml``); ``stage`` picks
  what a run does (``ode`` then ``dmd``, as the recipe runs them). Each stage has its own
  optimiser section, so ``--set dmd.optim.steps=10`` touches one stage only.
- ``out_dir`` is a template with ``{stage}`` (``student_tiny_{stage}``): the two stages are two
  run folders with their own checkpoints, metrics and release; the DMD stage starts from the
  ODE stage's release unless ``init`` names other weights.
- The student's streaming shape (block, KV window, sink) and sampler (steps, shift) live in
  ``student``; the student's ``DiTConfig`` is the teacher's with the streaming fields replaced,
  and ``stream.json`` (``StreamConfig``) is written beside its weights.
- ``data: null`` reuses the teacher's data section (its ``run.json``): the student distils on the
  teacher's clips, window length and resolution.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hand2world.models.config import DiTConfig, StreamConfig
from hand2world.train.config import DataConfig, OptimConfig

__all__ = ["DistillRunConfig", "DmdConfig", "OdeConfig", "StudentSpec"]


@dataclass(frozen=True)
class StudentSpec:
    """The causal student's streaming shape and few-step sampler.

    Attributes:
        steps: denoising steps per block (1-4).
        shift: timestep shift of the student's noise levels (``student_timesteps(steps, shift)``).
        stochastic: DMD stage: re-noise with fresh noise between steps (the rollout's sampler; saved in
            the DMD release's ``stream.json``). The ODE stage's release always samples along the ODE.
        context_t: noise level generated blocks are committed to the KV cache at.
        block: latent frames per block (1 = frame-wise).
        window: KV-cache window in latent frames besides the sink (0 = the teacher's ``cache_window``).
        sink: leading (scene) frames never evicted.
    """

    steps: int = 4
    shift: float = 1.0
    stochastic: bool = True
    context_t: float = 0.0
    block: int = 1
    window: int = 0
    sink: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 8:
            raise ValueError(f"student.steps must be in [1, 8] (a few-step student), got {self.steps}")
        if self.block < 1 or self.sink < 1 or self.window < 0:
            raise ValueError("student.block and student.sink must be >= 1, student.window >= 0")

    def dit_config(self, teacher: DiTConfig) -> DiTConfig:
        """The teacher's architecture with the student's streaming fields."""
        return dataclasses.replace(teacher, frames_per_block=self.block, cache_sink=self.sink,
                                   cache_window=self.window or teacher.cache_window)

    def stream_config(self, stochastic: bool | None = None) -> StreamConfig:
        """``stream.json`` of a release (guidance is distilled in: scales 1)."""
        return StreamConfig(steps=self.steps, shift=self.shift,
                            stochastic=self.stochastic if stochastic is None else stochastic,
                            context_t=self.context_t)


@dataclass(frozen=True)
class OdeConfig:
    """Stage (a): teacher ODE trajectories -> regression of the causal student.

    Attributes:
        pairs: teacher trajectories (training windows) to sample and store.
        teacher_steps: Euler steps of the teacher (a multiple of ``student.steps``, so the
            trajectory passes through the student's noise levels exactly).
        gen_batch: windows per teacher sampling batch.
        shard_size: pairs per stored shard (the unit of resume).
        guidance_hands, guidance_camera: classifier-free guidance of the teacher (1 = off).
        hand_loss_weight: extra regression weight on latent cells the hands cover (as the teacher's
            ``hand_loss_weight``; 0 = plain mean).
        optim: the regression's optimiser.
    """

    pairs: int = 256
    teacher_steps: int = 16
    gen_batch: int = 4
    shard_size: int = 32
    guidance_hands: float = 1.0
    guidance_camera: float = 1.0
    hand_loss_weight: float = 0.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=1000, lr=1e-4, warmup=50, ema_decay=0.99,
                                                                   ckpt_every=250))


@dataclass(frozen=True)
class DmdConfig:
    """Stage (b, c): DMD on self-forcing rollouts.

    Attributes:
        critic_lr: AdamW learning rate of the fake-score critic (the student's is ``optim.lr``).
        critic_steps: critic updates per student micro-batch (on the step's detached rollout, each with
            fresh noise and timesteps).
        guidance_hands, guidance_camera: guidance of the real score (the teacher).
        t_min, t_max: range of the uniform noise level at which both scores are evaluated.
        hand_loss_weight: extra weight of the DMD update on latent cells the hands cover (as the
            teacher's ``hand_loss_weight``; 0 = uniform).
        optim: the student's optimiser.
    """

    critic_lr: float = 1e-4
    critic_steps: int = 1
    guidance_hands: float = 1.0
    guidance_camera: float = 1.0
    t_min: float = 0.02
    t_max: float = 0.98
    hand_loss_weight: float = 0.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=500, batch_size=2, lr=2e-5, warmup=20,
                                                                   ema_decay=0.99, ckpt_every=100))

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"dmd.t_min/t_max must satisfy 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.critic_steps < 1:
            raise ValueError("dmd.critic_steps must be >= 1")


@dataclass(frozen=True)
class DistillRunConfig:
    """``hand2world distill``.

    Attributes:
        stage: ``ode`` (trajectory regression, initialises the student from the teacher) or
            ``dmd`` (distribution matching on self-forcing rollouts, starts from ``init``).
        teacher: the teacher (run name, folder or shipped name; its ``final/`` or latest checkpoint).
        init: the student's initial weights; ``None`` = the teacher (ode) or this config's ODE run (dmd).
        data: clips; ``None`` = the teacher's data section.
        out_dir: run folder template (``{stage}`` is replaced).
        student, ode, dmd: sections above.
    """

    stage: str = "ode"
    teacher: str = "teacher_tiny"
    init: str | None = None
    data: DataConfig | None = None
    out_dir: str = "student_tiny_{stage}"
    student: StudentSpec = field(default_factory=StudentSpec)
    ode: OdeConfig = field(default_factory=OdeConfig)
    dmd: DmdConfig = field(default_factory=DmdConfig)

    def __post_init__(self) -> None:
        if self.stage not in ("ode", "dmd"):
            raise ValueError(f"stage must be ode|dmd, got {self.stage!r}")
        if self.ode.teacher_steps % self.student.steps:
            raise ValueError(f"ode.teacher_steps ({self.ode.teacher_steps}) must be a multiple of student.steps "
                             f"({self.student.steps})")

    @property
    def optim(self) -> OptimConfig:
        """The active stage's optimiser."""
        return self.ode.optim if self.stage == "ode" else self.dmd.optim

    def run_dir_name(self, stage: str | None = None) -> str:
        return self.out_dir.format(stage=stage or self.stage)

    def student_init(self) -> str:
        """Where the student's initial weights come from."""
        if self.init:
            return self.init
        return self.teacher if self.stage == "ode" else self.run_dir_name("ode")
