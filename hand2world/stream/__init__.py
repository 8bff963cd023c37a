"""hand2world.stream: the one autoregressive rollout and the ``StreamingGenerator`` built on it."""

from hand2world.stream.generator import StreamingGenerator
from hand2world.stream.rollout import commit_context, denoise_block, rollout, student_timesteps
from hand2world.stream.weights import ChecksumError, load_video_model, verify_checksums, write_checksums

__all__ = ["ChecksumError", "StreamingGenerator", "commit_context", "denoise_block", "load_video_model", "rollout",
           "student_timesteps", "verify_checksums", "write_checksums"]
