"""hand2world.data."""
