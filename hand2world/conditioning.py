"""Gesture -> conditioning: tracked landmarks to the hand control image the video model reads.

One ``ControlPipeline`` turns each tracked frame (MediaPipe-style hands: side, normalised
image landmarks, metric world landmarks) into the occlusion-invariant hand control image
(full mesh, silhouette + wireframe), with the fitted meshes and poses.

Design choices:
- Smoothing (One-Euro) runs on landmarks before fitting, per hand side, so jitter never
  reaches the fit; a side that disappears drops its filter and warm start.
- Fits are warm-started from the previous frame of the same side (few iterations per frame).
- The camera is a pinhole with a documented default field of view (``fov_deg``) unless the
  caller gives ``K``; hand meshes are placed in that camera by the fit (metric world
  landmarks fix the size, image landmarks fix position and depth).
- No camera state here: the viewer's camera goes to the frame source with each control
  (``step(control, c2w)``), which owns the stream's reference camera and makes the Plücker
  rays; this pipeline computes no rays.
- No I/O here: the CLI, the server and the annotation pipeline all call this same object.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from hand2world.geometry import intrinsics_from_fov
from hand2world.hands import HandMesh, HandModel, HandPose, OneEuroFilter, fit_landmarks
from hand2world.hands.skeleton import SIDES
from hand2world.render import render_control

log = logging.getLogger(__name__)


class HandLike(Protocol):
    """What a tracker returns per hand (``hand2world.tracking.TrackedHand`` or a wire message)."""

    side: str
    image: np.ndarray  # [21, 3] normalised x, y in [0, 1] (z ignored)
    world: np.ndarray  # [21, 3] metres, hand-centred


@dataclass(frozen=True)
class ControlConfig:
    """Settings of the conditioning path (saved with runs; frozen)."""

    height: int = 256
    width: int = 256
    fov_deg: float = 60.0  # horizontal field of view used when no K is given
    kind: str = "open"  # hand model: "open" (default) or "mano"
    smooth_min_cutoff: float = 1.5  # One-Euro: Hz; lower = smoother at rest
    smooth_beta: float = 0.3  # One-Euro: speed coefficient; higher = less lag when moving
    fit_sigma_world: float = 0.005  # fit: metres per unit 3-D residual (larger trusts the image landmarks more)
    fit_sigma_image: float = 2.0  # fit: pixels (of this output size) per unit reprojection residual
    fit_refine_iters: int | None = None  # fit: warm-started 3-D + 2-D iterations (None: fit_landmarks' default)
    fit_shape_prior: float = 0.3  # fit: weight of the shape prior (fit_landmarks)


@dataclass
class ControlFrame:
    """One frame of conditioning.

    Attributes:
        control: uint8 [H, W, 3] control render.
        meshes: fitted meshes (batch 1 each) in camera coordinates.
        landmarks_px: side -> [21, 2] smoothed image landmarks in pixels of the output size.
        poses: side -> fitted ``HandPose`` (batch 1).
    """

    control: np.ndarray
    meshes: list[HandMesh] = field(default_factory=list)
    landmarks_px: dict[str, np.ndarray] = field(default_factory=dict)
    poses: dict[str, HandPose] = field(default_factory=dict)


class ControlPipeline:
    """Stateful per-stream conditioning: call ``process`` once per tracked frame, in time order."""

    def __init__(self, config: ControlConfig = ControlConfig(), K: np.ndarray | None = None,
                 mano_dir: str | None = None) -> None:
        self.config = config
        self.K = np.asarray(K if K is not None else
                            intrinsics_from_fov(config.fov_deg, config.height, config.width), dtype=np.float32)
        self.models = {side: HandModel.load(config.kind, side=side, mano_dir=mano_dir) for side in SIDES}
        self.reset()

    def reset(self) -> None:
        """Forget filters and warm starts (a new stream)."""
        self._filters: dict[str, tuple[OneEuroFilter, OneEuroFilter]] = {}
        self._poses: dict[str, HandPose] = {}

    def _smooth(self, side: str, image_px: np.ndarray, world: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        if side not in self._filters:
            c = self.config
            self._filters[side] = (OneEuroFilter(c.smooth_min_cutoff, c.smooth_beta),
                                   OneEuroFilter(c.smooth_min_cutoff, c.smooth_beta))
        f_img, f_world = self._filters[side]
        return f_img(image_px, t).astype(np.float32), f_world(world, t).astype(np.float32)

    def process(self, hands: Sequence[HandLike], t: float) -> ControlFrame:
        """Landmarks of one frame -> control render (+ meshes, poses, smoothed landmarks).

        Args:
            hands: tracked hands of this frame (at most one per side is used: the first).
            t: timestamp in seconds (monotonic within a stream).
        """
        c = self.config
        size = np.array([c.width, c.height], dtype=np.float32)
        frame = ControlFrame(control=np.zeros((c.height, c.width, 3), np.uint8))
        seen: set[str] = set()
        for hand in hands:
            side = hand.side
            if side not in SIDES or side in seen:
                continue
            seen.add(side)
            image = np.asarray(hand.image, dtype=np.float32)[:, :2] * size
            world = np.asarray(hand.world, dtype=np.float32)
            image, world = self._smooth(side, image, world, t)
            init = self._poses.get(side)
            pose = fit_landmarks(self.models[side], torch.from_numpy(world)[None], torch.from_numpy(image)[None],
                                 torch.from_numpy(self.K), init=init, refine_iters=c.fit_refine_iters,
                                 sigma_world=c.fit_sigma_world, sigma_image=c.fit_sigma_image,
                                 shape_prior=c.fit_shape_prior)
            self._poses[side] = pose.detach()
            with torch.no_grad():
                frame.meshes.append(self.models[side](pose))
            frame.landmarks_px[side] = image
            frame.poses[side] = pose
        for side in set(self._filters) - seen:  # a hand that left the view starts fresh when it returns
            self._filters.pop(side)
            self._poses.pop(side, None)
        frame.control = render_control(frame.meshes, self.K, c.height, c.width)
        return frame
