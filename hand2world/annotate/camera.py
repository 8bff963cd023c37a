"""Camera trajectory from the video itself: keyframe visual odometry with the hands masked out.

Design choices:
- Features: Shi-Tomasi corners detected on a keyframe and tracked frame to frame by pyramidal
  Lucas-Kanade (OpenCV), kept while the backward track returns within 1 px; never on a hand:
  each hand's landmark hull, dilated by ``mask_dilate`` of the hand's size, plus a forearm band
  from the wrist to the image border, is masked (detection on the keyframe; a track entering
  the mask later is dropped). KLT was chosen over ORB matching: head motion between frames is
  small, and KLT is faster and sub-pixel.
- Keyframes: each frame's pose is estimated against the current keyframe (a wider baseline
  than the previous frame: better conditioned); a new keyframe every ``keyframe_every`` frames
  (4 beat 2, 8 and 16 on synthetic ground truth), or when the median flow since the keyframe
  exceeds ``keyframe_flow_px`` or fewer than ``keyframe_keep`` of its points survive.
  ``c2w[t] = c2w[key] @ inv(T_{t,key})``; the first frame is the world frame (identity). Drift
  accumulates; the floor metric is relative rotation over 16-frame windows.
- Static test first: when at least ``static_fraction`` of the tracked points moved less than
  ``static_px``, the camera did not move (points of a still scene do not move by accident;
  what moves is a hand-held object).
- Otherwise two motion models, on bearing vectors ``K^-1 [u, v, 1]`` (OpenCV's integer pixel
  centres shifted by 0.5 to the project's convention):
  1. pure rotation ``b2 ~ R b1`` (Kabsch on RANSAC inliers of a homography): head turns with
     little translation, where the essential matrix is degenerate;
  2. the essential matrix (5-point RANSAC) + ``recoverPose``: rotation and translation direction.
  The rotation-only model is kept when its median reprojection residual is below
  ``parallax_px``; otherwise the essential-matrix pose is used and its inliers are triangulated
  to a median scene depth in units of the (unit) baseline.
- Metric scale (best effort): a monocular pose has no scale. Each translation is scaled so that
  the median depth of its triangulated scene points equals ``scene_depth`` metres; the pipeline
  passes the median depth of the fitted hands (metric through the hand-size prior), i.e. it
  assumes the hands work at about the depth of the scene the camera sees, as on a tabletop.
  Where no hand is seen, 0.5 m.
- Not handled: a hand-held object that dominates the view moves the estimate with it (only
  hands and forearms are masked). pycolmap's LO-RANSAC relative pose and its refinement were
  tried on the same correspondences and were not more accurate, so they are not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["OdometryConfig", "VisualOdometry", "hand_mask_from_landmarks", "rotation_angle_deg"]


@dataclass(frozen=True)
class OdometryConfig:
    """Settings of the visual odometry (frozen; saved in the QA report)."""

    max_corners: int = 600
    quality: float = 0.005
    min_distance: int = 8
    max_width: int = 640  # frames wider than this are downscaled for odometry
    mask_dilate: float = 0.25  # hand-mask dilation, fraction of the hand's landmark box diagonal
    parallax_px: float = 0.7  # rotation-only model kept below this median residual (pixels)
    static_px: float = 0.3  # a point moving less than this is "still" ...
    static_fraction: float = 0.3  # ... and when this fraction of points is still, the camera did not move
    min_points: int = 12
    ransac_px: float = 1.0  # essential-matrix RANSAC threshold (pixels; 0.5 and 2 were no better on synthetic GT)
    keyframe_every: int = 4  # frames; a new keyframe at least this often (4 beat 2, 8 and 16 on synthetic GT)
    keyframe_flow_px: float = 40.0  # ... or once the median flow since the keyframe exceeds this
    keyframe_keep: float = 0.5  # ... or once fewer than this fraction of its points are still tracked


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices ``[..., 3, 3]`` in degrees."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def hand_mask_from_landmarks(hands_px: list[np.ndarray], height: int, width: int, dilate: float = 0.25,
                             arm: bool = True) -> np.ndarray:
    """uint8 ``[H, W]`` mask (255 = hand): convex hull of each hand's ``[21, 2]`` pixel landmarks, dilated.

    With ``arm``, a band as wide as the palm runs from the wrist away from the middle finger's
    knuckle to the image border: the forearm, which moves with the hand.
    """
    mask = np.zeros((height, width), np.uint8)
    for pts in hands_px:
        pts = np.clip(np.asarray(pts, np.float32)[:, :2], -width, 2 * width)
        if not np.isfinite(pts).all():
            continue
        hull = cv2.convexHull(pts.astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
        diag = float(np.linalg.norm(pts.max(0) - pts.min(0)))
        r = min(int(round(dilate * diag)), 100)
        if r > 0:
            cv2.polylines(mask, [hull], True, 255, thickness=2 * r + 1)
        if arm:
            d = pts[0] - pts[9]
            n = float(np.linalg.norm(d))
            if n > 1e-3:
                end = pts[0] + d / n * 2 * (height + width)
                width_px = min(max(1, int(round(1.2 * float(np.linalg.norm(pts[5] - pts[17])))) + 2 * r), 250)
                cv2.line(mask, tuple(int(v) for v in pts[0]), tuple(int(v) for v in np.clip(end, -1e5, 1e5)), 255,
                         width_px)
    return mask


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation ``R`` minimising ``|b - R a|`` for unit bearings ``a, b [N, 3]`` (not centred)."""
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


@dataclass
class VisualOdometry:
    """Incremental keyframe odometry: call ``step(rgb, hands_px)`` once per frame, in order; read ``c2w()``.

    Args:
        K: ``[3, 3]`` intrinsics in pixels of the frames passed in.
        config: odometry settings.
    """

    K: np.ndarray
    config: OdometryConfig = OdometryConfig()
    # per frame: (keyframe index, R [3,3], t_unit [3], median depth in baselines or nan, kind); frame 0 is
    # the first keyframe. R, t map the keyframe's camera coordinates to this frame's.
    rel: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, np.float64)
        self._scale = 1.0
        self._prev: np.ndarray | None = None
        self._key = -1
        self._key_pts = np.zeros((0, 2), np.float32)  # keyframe positions of the live tracks
        self._cur_pts = np.zeros((0, 2), np.float32)  # their positions in the previous frame
        self._key_count = 0
        self.tracked: list[int] = []

    def _prepare(self, rgb: np.ndarray, hands_px: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        if w > self.config.max_width:
            self._scale = self.config.max_width / w
            rgb = cv2.resize(rgb, (self.config.max_width, int(round(h * self._scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        hand = hand_mask_from_landmarks([p * self._scale for p in hands_px], *gray.shape, self.config.mask_dilate)
        return gray, cv2.bitwise_not(hand)

    def _new_keyframe(self, t: int, gray: np.ndarray, allowed: np.ndarray) -> None:
        c = self.config
        pts = cv2.goodFeaturesToTrack(gray, c.max_corners, c.quality, c.min_distance, mask=allowed)
        pts = np.zeros((0, 2), np.float32) if pts is None else pts[:, 0].astype(np.float32)
        self._key, self._key_pts, self._cur_pts, self._key_count = t, pts, pts.copy(), len(pts)

    def step(self, rgb: np.ndarray, hands_px: list[np.ndarray]) -> None:
        """Add one frame: uint8 RGB ``[H, W, 3]`` and the hands' ``[21, 2]`` pixel landmarks (to mask)."""
        c = self.config
        t = len(self.rel)
        gray, allowed = self._prepare(rgb, hands_px)
        if self._prev is None:
            self.rel.append((0, np.eye(3), np.zeros(3), np.nan, "key"))
            self._new_keyframe(t, gray, allowed)
            self._prev = gray
            return
        if len(self._cur_pts):
            p0 = self._cur_pts.reshape(-1, 1, 2)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, p0, None, winSize=(21, 21), maxLevel=3)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._prev, p1, None, winSize=(21, 21), maxLevel=3)
            ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - p0, axis=2)[:, 0] < 1.0)
            p1 = p1[:, 0]
            h, w = gray.shape
            ok &= (p1[:, 0] >= 0) & (p1[:, 0] < w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] < h - 1)
            ok[ok] &= allowed[p1[ok, 1].astype(int), p1[ok, 0].astype(int)] > 0
            self._key_pts, self._cur_pts = self._key_pts[ok], p1[ok]
        self.tracked.append(len(self._cur_pts))
        key = self._key
        R, tv, depth, kind = self._estimate(self._key_pts.astype(np.float64), self._cur_pts.astype(np.float64))
        self.rel.append((key, R, tv, depth, kind))
        self._prev = gray
        flow = np.median(np.linalg.norm(self._cur_pts - self._key_pts, axis=1)) if len(self._cur_pts) else 0.0
        if (kind == "none" or len(self._cur_pts) < c.keyframe_keep * self._key_count or flow > c.keyframe_flow_px
                or t - key >= c.keyframe_every):
            self._new_keyframe(t, gray, allowed)

    def _estimate(self, p1: np.ndarray, p2: np.ndarray) -> tuple:
        """Pose of the current frame relative to the keyframe from tracked points ``p1 -> p2 [N, 2]``."""
        c = self.config
        if len(p1) < c.min_points:
            return np.eye(3), np.zeros(3), np.nan, "none"
        still = np.linalg.norm(p2 - p1, axis=1) < c.static_px
        if still.sum() >= c.min_points and still.mean() >= c.static_fraction:
            return np.eye(3), np.zeros(3), np.nan, "static"  # a still background; movers are hand-held objects
        K = self.K.copy()
        K[:2] *= self._scale
        # OpenCV's feature coordinates put pixel centres at integers; K (project convention) at i + 0.5
        p1, p2 = p1 + 0.5, p2 + 0.5
        Kinv = np.linalg.inv(K)
        b1 = np.c_[p1, np.ones(len(p1))] @ Kinv.T
        b2 = np.c_[p2, np.ones(len(p2))] @ Kinv.T
        # model 1: pure rotation (homography inliers, then Kabsch on unit bearings)
        _, hmask = cv2.findHomography(p1, p2, cv2.RANSAC, 1.5)
        inl = hmask[:, 0].astype(bool) if hmask is not None else np.ones(len(p1), bool)
        u1 = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
        u2 = b2 / np.linalg.norm(b2, axis=1, keepdims=True)
        R_rot = _kabsch(u1[inl], u2[inl])
        proj = (b1 @ R_rot.T) @ K.T
        resid = np.linalg.norm(proj[:, :2] / proj[:, 2:] - p2, axis=1)
        if np.median(resid[inl]) < c.parallax_px:
            return R_rot, np.zeros(3), np.nan, "rotation"
        # model 2: essential matrix
        E, emask = cv2.findEssentialMat(p1, p2, K, cv2.RANSAC, 0.9999, c.ransac_px)
        if E is None or E.shape != (3, 3):
            return R_rot, np.zeros(3), np.nan, "rotation"
        n, R, t, pmask = cv2.recoverPose(E, p1, p2, K, mask=emask)
        inl = pmask[:, 0] > 0
        if n < c.min_points:
            return R_rot, np.zeros(3), np.nan, "rotation"
        t = t[:, 0]
        # depth of the inliers in the current camera, in units of the (unit) baseline:
        # z1 R b1 + t = z2 b2  ->  least squares for (z1, z2) per point
        a = np.stack([b1[inl] @ R.T, -b2[inl]], axis=2)  # [N, 3, 2]
        ata = np.einsum("nij,nik->njk", a, a)
        atb = np.einsum("nij,i->nj", a, -t)
        z2 = np.linalg.solve(ata + 1e-12 * np.eye(2), atb[..., None])[..., 0][:, 1]
        depth = float(np.median(z2[z2 > 0])) if (z2 > 0).sum() >= c.min_points else np.nan
        return R, t, depth, "essential"

    def c2w(self, scene_depth: float = 0.5) -> np.ndarray:
        """``[T, 4, 4]`` camera-to-world (world = first camera); translation scaled to ``scene_depth`` m."""
        poses: list[np.ndarray] = []
        for key, R, t, depth, _ in self.rel:
            rel = np.eye(4)  # keyframe camera -> this camera
            rel[:3, :3] = R
            if np.isfinite(depth) and depth > 0:
                rel[:3, 3] = t * (scene_depth / depth)
            poses.append(np.eye(4) if not poses else poses[key] @ np.linalg.inv(rel))
        return np.stack(poses).astype(np.float32)

    def summary(self) -> dict:
        """Counts of the motion models chosen and the median number of tracked points."""
        kinds = [r[4] for r in self.rel[1:]]
        return {"steps": len(kinds), **{k: kinds.count(k) for k in ("static", "rotation", "essential", "none")},
                "keyframes": len({r[0] for r in self.rel}),
                "median_tracked_points": float(np.median(self.tracked)) if self.tracked else 0.0}
