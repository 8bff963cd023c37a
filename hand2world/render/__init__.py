"""hand2world.render: the hand control image (silhouette + wireframe) and landmark overlays.

Design choices: a NumPy z-buffer rasteriser (``raster``) instead of ``cv2.fillPoly`` (whose
even-odd rule leaves overlapping triangles unfilled) or an OpenGL context (a system
dependency); side colours in one place (``colors``); the renderer imports nothing of
``hand2world.hands`` (meshes are duck-typed, ``control.MeshLike``; only the benchmark, ``bench``,
poses the open hand model). See each module's header for details.
"""

from hand2world.render.colors import SHADE_MIN, SIDE_COLORS, SideColors, side_colors
from hand2world.render.control import DEPTH_EDGE, NEAR, MeshLike, control_silhouette, mask_control, render_control
from hand2world.render.landmarks import HAND_BONES, render_landmarks
from hand2world.render.raster import rasterize_triangles

__all__ = [
    "DEPTH_EDGE",
    "HAND_BONES",
    "NEAR",
    "SHADE_MIN",
    "SIDE_COLORS",
    "MeshLike",
    "SideColors",
    "control_silhouette",
    "mask_control",
    "rasterize_triangles",
    "render_control",
    "render_landmarks",
    "side_colors",
]
