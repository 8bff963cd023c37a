"""hand2world.stream: the one autoregressive rollout and the ``StreamingGenerator`` built on it.

Model folders load through ``hand2world.checkpoints`` (below this package and ``hand2world.train``).
"""

from hand2world.stream.generator import StreamingGenerator
from hand2world.stream.rollout import commit_context, denoise_block, rollout, student_timesteps

__all__ = ["StreamingGenerator", "commit_context", "denoise_block", "rollout", "student_timesteps"]
