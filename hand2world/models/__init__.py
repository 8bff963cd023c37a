"""hand2world.models."""
