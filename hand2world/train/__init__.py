"""hand2world.train."""
