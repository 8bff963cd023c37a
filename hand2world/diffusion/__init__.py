"""hand2world.diffusion."""
