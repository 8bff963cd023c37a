"""hand2world.diffusion: rectified-flow noising, timesteps, loss and samplers."""

from hand2world.diffusion.flow import (
    add_noise,
    euler_sample,
    flow_loss,
    guided_velocity,
    sample_timesteps,
    shift_timesteps,
    timestep_schedule,
    weighted_mse,
)

__all__ = ["add_noise", "euler_sample", "flow_loss", "guided_velocity", "sample_timesteps", "shift_timesteps",
           "timestep_schedule", "weighted_mse"]
