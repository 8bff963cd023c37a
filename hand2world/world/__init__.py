"""hand2world.world: a procedural egocentric tabletop world that writes training clips with full ground truth.

- ``scene``: table, room, 1-6 objects, lighting, camera and head motion (world = table frame, z up).
- ``rig`` / ``actions``: both hands of the open model driven by an action library with natural timing.
- ``dynamics``: pushes slide objects, grasps carry them, loose objects fall and rest.
- ``gl``: moderngl (EGL) renderer: shaded RGB, depth, visible and full hand masks.
- ``look``: per-clip appearance from its own random stream: key and ambient light, shadow softness, skin.
- ``synth``: ``synthesize(out_dir, clips, frames, size, seed, workers)`` -> ``hand2world.data`` clips
  (each with its hand-free scene photo).
- ``preview``: contact sheet (RGB | control | masks | depth).
"""

from hand2world.world.actions import ACTIONS, CONTACT_ACTIONS, FREE_SPACE_ACTIONS
from hand2world.world.synth import WorldSettings, make_clip, synthesize

__all__ = ["ACTIONS", "CONTACT_ACTIONS", "FREE_SPACE_ACTIONS", "WorldSettings", "make_clip", "synthesize"]
