"""hand2world.stream."""
