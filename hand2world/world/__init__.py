"""hand2world.world."""
