"""hand2world.geometry."""
