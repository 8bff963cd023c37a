"""hand2world.render."""
