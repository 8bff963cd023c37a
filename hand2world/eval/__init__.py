"""hand2world.eval."""
