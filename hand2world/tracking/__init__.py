"""hand2world.tracking."""
