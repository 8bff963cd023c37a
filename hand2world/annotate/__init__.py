"""hand2world.annotate."""
