"""hand2world: an interactive, hand-driven world simulator."""

__version__ = "0.1.0"
