"""hand2world.hands."""
