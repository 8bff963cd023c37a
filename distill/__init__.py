"""hand2world.distill: teacher -> causal few-step student (ODE-trajectory init, then DMD on self-forcing rollouts).

``run_distill(load_run_config(path, DistillRunConfig))`` runs one stage (``stage: ode | dmd``);
``run_recipe(preset)`` runs the whole recipe (world -> autoencoder -> teacher -> ode -> dmd).
"""

from hand2world.distill.config import DistillRunConfig, DmdConfig, OdeConfig, StudentSpec
from hand2world.distill.run import run_distill

__all__ = ["DistillRunConfig", "DmdConfig", "OdeConfig", "StudentSpec", "run_distill"]
