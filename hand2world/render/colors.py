"""Per-side colours of every hand drawing (control render, landmark overlays): the one place they live.

Design choices:
- Left hand blue, right hand orange: opposite hues, so they stay apart after a VAE round
  trip, under JPEG/VP8 compression and for colour-blind readers (blue/orange is the usual
  safe pair). The fill is bright and saturated on the black background; the wireframe is a
  dark tone of the same hue (contrasting with the fill, same identity).
- Shading only scales the fill (``SHADE_MIN`` .. 1); the darkest shaded fill stays clearly
  brighter than the wire of the same side.
- All colours are RGB uint8 triples (images at I/O boundaries are RGB).
"""

from __future__ import annotations

from dataclasses import dataclass

from hand2world.hands.skeleton import SIDES

__all__ = ["SIDES", "SIDE_COLORS", "SHADE_MIN", "SideColors", "side_colors"]


@dataclass(frozen=True)
class SideColors:
    """Colours of one hand side (RGB uint8)."""

    fill: tuple[int, int, int]
    wire: tuple[int, int, int]
    joint: tuple[int, int, int]



SIDE_COLORS: dict[str, SideColors] = {
    "left": SideColors(fill=(60, 140, 255), wire=(10, 35, 110), joint=(200, 225, 255)),
    "right": SideColors(fill=(255, 140, 30), wire=(115, 45, 0), joint=(255, 225, 190)),
}

# Lowest shading factor applied to the fill (surface seen edge-on); 1.0 when facing the camera.
SHADE_MIN = 0.6


def side_colors(side: str) -> SideColors:
    """Colours for ``side`` ("left" | "right"); raises ``ValueError`` for anything else."""
    try:
        return SIDE_COLORS[side]
    except KeyError:
        raise ValueError(f"hand side must be one of {SIDES}, got {side!r}") from None
