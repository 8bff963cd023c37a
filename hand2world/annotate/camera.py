"""Camera trajectory from the video itself: feature tracks with the hands masked out, chained keyframe
poses, then a bundle adjustment over the whole video (``bundle``).

Rules (the measurements behind each are in docs/annotation.md, "Design notes of the solver"):
- Features: Shi-Tomasi corners only (smaller structure-tensor eigenvalue at least ``corner_ratio`` of
  the larger: points on straight edges slide and are not started), tracked by pyramidal Lucas-Kanade
  while the backward track returns within ``fb_px``; replenished wherever no live track is near, with a
  per-cell floor (``cell_min``) so dim regions beside bright ones keep tracks.
- Never on a hand: each hand's landmark hull, dilated by ``mask_dilate`` of the hand's size, plus a
  forearm band from the wrist to the image border, is masked; a track entering the mask is dropped.
- Keyframe poses (the adjustment's seeds and its fallback): each frame against the current keyframe
  (a new one every ``keyframe_every`` frames, on large flow or on track loss): static test, else pure
  rotation (Kabsch on bearings) when it explains the points within ``parallax_px``, else the essential
  matrix + ``recoverPose``; chained keyframe to keyframe.
- A bundle adjustment over all poses and points resolves the rotation/translation ambiguity of short
  baselines. Before it, tracks outside the keyframe pairs' RANSAC consensus more than ``outlier_tracks``
  of the time are left out, and at most ``solve_cap`` tracks per cell of a ``solve_grid`` split enter it.
- Multi-start (rotation-only and chained poses, each grown forward and backward); among solutions within
  ``select_margin`` of the lowest cost the consensus is kept; the chained poses win back when the kept
  solution departs from them by more than ``fallback_deg`` and they explain the tracks about as well.
- Motion prior: a Gaussian on the head's speed (``head_speed``, scene depths per second) and angular
  acceleration (``head_turn_deg``), tuned on gentle head motion: loosen it for footage that walks or turns.
- After cleaning, ``VisualOdometry.remask`` re-masks the hands from the cleaned tracks: a track seen inside
  a hand's outline goes entirely, a held mask never leaves a frame with less than ``remask_keep`` of its
  tracks, and the dilation is ``remask_dilate``.
- Metric scale (best effort): the median scene depth is set to ``scene_depth`` metres (the pipeline passes
  the fitted hands' median depth; 0.5 m without hands).
- Not handled: a hand-held object that dominates the view moves the estimate with it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from hand2world.annotate.bundle import BundleConfig, incremental_bundle, trajectory_cost
from hand2world.geometry.rotations import kabsch_rotation, rotation_angle_deg

log = logging.getLogger(__name__)

__all__ = ["OdometryConfig", "VisualOdometry", "hand_mask_from_landmarks"]


_LK_WINDOW = 21  # Lucas-Kanade window (pixels), also the window of the corner test (OdometryConfig.corner_ratio)


@dataclass(frozen=True)
class OdometryConfig:
    """Settings of the visual odometry (frozen; saved in the QA report)."""

    max_corners: int = 600
    quality: float = 0.005
    min_distance: int = 8
    corner_ratio: float = 0.1  # new corners need smaller/larger structure-tensor eigenvalue >= this over the
    # tracking window (a point on a straight edge, such as a stripe, slides along it; 0 disables)
    grid: int = 4  # the frame split into grid x grid cells: where a cell holds fewer than ``cell_min`` tracks,
    cell_min: int = 6  # more corners are detected against the cell's own strongest one (a dim wall beside a
    # bright box: one threshold over the frame leaves it bare). grid 1 or cell_min 0 disables
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
    fb_px: float = 1.0  # forward-backward tracking check (pixels)
    replenish: float = 0.8  # new corners are detected whenever fewer than this fraction of max_corners live
    ba_inits: tuple[str, ...] = ("rotation", "chained", "rotation-reversed", "chained-reversed")  # bundle adjustment
    # starts: the rotation-only chain and the chained poses, each grown forward and (``-reversed``) backward in time
    select_margin: float = 0.06  # starts within this relative cost of the best one: the consensus is kept (_select)
    max_points: int = 400  # the longest tracks that enter the bundle adjustment
    fallback_deg: float = 10.0  # keep the chained poses when the adjusted ones differ by more over 16 frames ...
    fallback_cost_margin: float = 0.06  # ... and the chained poses' common robust cost is within this of theirs
    outlier_tracks: float = 0.2  # tracks outside the epipolar consensus more often than this are left out
    solve_grid: int = 8  # at most ``solve_cap`` tracks (the longest) per cell of a solve_grid x solve_grid split
    solve_cap: int = 8  # (by a track's median position) enter the adjustment: a dense textured object near the
    # hands (pushed, so moving) cannot outweigh the scene spread over the frame (0: no cap)
    bundle: bool = True  # refine the chained poses by bundle adjustment over all tracks
    remask_dilate: float = 0.25  # after cleaning: mask dilation of the cleaned hand tracks (hand sizes) ...
    track_mask_dilate: float = 0.0  # ... and a track inside a hand's outline (this dilation) in any frame is
    # dropped whole: it sits on the hand also where the hand was missed (negative disables)
    remask_keep: float = 0.4  # ... halved (down to the outline) where it would leave less than this fraction of
    # a frame's tracks
    remask_hold: int = 8  # ... a lost hand's last/next landmarks stay masked this many frames, growing
    head_speed: float = 0.08  # motion prior of the adjustment (Gaussian): camera speed, scene depths per second
    # (4 cm/s at 0.5 m; 0 disables) ...
    head_turn_deg: float = 512.0  # ... and angular acceleration, deg/s^2 (both per frame at ``fps``, see _bundle)
    threads: int = 1  # BLAS threads of the adjustment: the result depends on them (sums in another order can
    # land a borderline solve in another minimum: 7006/3 2.04 deg with 1, 3.43 with 2), so they are pinned
    ba: BundleConfig = field(default_factory=BundleConfig)


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


def _max_window_gap(c2w_a: np.ndarray, c2w_b: np.ndarray, window: int) -> float:
    """Largest angle (deg) between the relative rotations of two trajectories over ``window`` frames (sliding)."""
    n = len(c2w_a)
    if n < 2:
        return 0.0
    w = min(window, n) - 1
    Ra, Rb = c2w_a[:, :3, :3], c2w_b[:, :3, :3]
    rel_a = np.einsum("nji,njk->nik", Ra[:-w], Ra[w:])
    rel_b = np.einsum("nji,njk->nik", Rb[:-w], Rb[w:])
    return float(rotation_angle_deg(np.einsum("nji,njk->nik", rel_a, rel_b)).max())


def _c2w(out: dict) -> np.ndarray:
    """``[F, 4, 4]`` camera-to-world of a bundle solution (``R``, ``t``: world-to-camera)."""
    w2c = np.tile(np.eye(4), (len(out["R"]), 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = out["R"], out["t"]
    return np.linalg.inv(w2c)


def _select(outs: list[dict], margin: float) -> dict:
    """The kept solution of a multi-start adjustment.

    Solutions whose common robust cost is within ``margin`` (relative) of the lowest explain the tracks
    about equally well; their costs do not say which is right (on textureless or striped tables a wrong
    valley of the rotation/translation ambiguity can cost a few percent less). With three or more of
    them the consensus is kept: the one whose trajectory is closest to the others (smallest summed
    largest 16-frame rotation gap). Otherwise the lowest cost.
    """
    low = min(o["cost"] for o in outs)
    near = [o for o in outs if o["cost"] <= (1.0 + margin) * low]
    if len(near) < 3:
        return min(outs, key=lambda o: o["cost"])
    c2w = [_c2w(o) for o in near]
    spread = [sum(_max_window_gap(a, b, 16) for b in c2w) for a in c2w]
    return near[int(np.argmin(spread))]


def _cell_of(x: np.ndarray, y: np.ndarray, g: int, h: int, w: int) -> np.ndarray:
    """``[N]`` row-major index of the cell of a ``g x g`` split of an ``h x w`` frame that holds each point
    ``x, y [N]`` (points outside go to the nearest cell)."""
    return np.clip((y * g / h).astype(int), 0, g - 1) * g + np.clip((x * g / w).astype(int), 0, g - 1)


def _clear_around(mask: np.ndarray, pts: np.ndarray, radius: int) -> None:
    """Zero uint8 ``mask [H, W]`` within ``radius`` pixels of each point ``pts [N, 2]`` (in place)."""
    for x, y in pts:
        cv2.circle(mask, (int(x), int(y)), radius, 0, -1)


def _median_by(group: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """``[n]`` the median (upper of two) of ``value [N]`` per ``group [N]`` id in ``0..n-1`` (0 where none)."""
    order = np.lexsort((value, group))
    count = np.bincount(group, minlength=n)
    first = np.r_[0, np.cumsum(count)[:-1]]
    out = np.zeros(n)
    has = count > 0
    out[has] = value[order[first[has] + count[has] // 2]]
    return out


@dataclass
class VisualOdometry:
    """Incremental keyframe odometry: call ``step(rgb, hands_px)`` once per frame, in order; read ``c2w()``.

    Args:
        K: ``[3, 3]`` intrinsics in pixels of the frames passed in.
        config: odometry settings.
    """

    K: np.ndarray
    config: OdometryConfig = OdometryConfig()
    fps: float = 16.0  # frame rate of the video (the motion prior is per second)
    # per frame: (keyframe index, R [3,3], t_unit [3], median depth in baselines or nan, kind); frame 0 is
    # the first keyframe. R, t map the keyframe's camera coordinates to this frame's.
    rel: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, np.float64)
        self._scale = 1.0
        self._prev: np.ndarray | None = None
        self._key = -1
        self._ids = np.zeros(0, np.int64)  # live tracks: ids and positions in the previous frame
        self._cur_pts = np.zeros((0, 2), np.float32)
        self._key_ids = np.zeros(0, np.int64)  # the keyframe's tracks and their positions there
        self._key_pts = np.zeros((0, 2), np.float32)
        self._next_id = 0
        self._obs: list[tuple[np.ndarray, np.ndarray]] = []  # per frame: (track ids, pixel positions)
        self._solved: dict | None = None
        self._ba_inputs: tuple = ()  # (K, frames, point, uv, depth) of the last solve
        self._rot_only: list[np.ndarray] = [np.eye(3)]  # per frame: the rotation-only model against its keyframe
        self._last_rot = np.eye(3)
        self._tested = np.zeros(0, np.int32)  # per track id: epipolar tests and rejections (_epipolar_check)
        self._rejected = np.zeros(0, np.int32)
        self.tracked: list[int] = []
        self.solve_ms = 0.0

    def _prepare(self, rgb: np.ndarray, hands_px: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        h, w = rgb.shape[:2]
        if w > self.config.max_width:
            self._scale = self.config.max_width / w
            rgb = cv2.resize(rgb, (self.config.max_width, int(round(h * self._scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        hand = hand_mask_from_landmarks([p * self._scale for p in hands_px], *gray.shape, self.config.mask_dilate)
        return gray, cv2.bitwise_not(hand)

    def _replenish(self, gray: np.ndarray, allowed: np.ndarray) -> None:
        """Detect new corners where no live track is within ``min_distance`` (and never on a hand)."""
        c = self.config
        if len(self._ids) >= c.replenish * c.max_corners:
            return
        mask = allowed.copy()
        if c.corner_ratio > 0:
            eig = cv2.cornerEigenValsAndVecs(gray, _LK_WINDOW, 3)  # [H, W, 6]: the two eigenvalues first
            mask[eig[..., 1] < c.corner_ratio * eig[..., 0]] = 0
        _clear_around(mask, self._cur_pts, c.min_distance)
        pts = cv2.goodFeaturesToTrack(gray, c.max_corners - len(self._ids), c.quality, c.min_distance, mask=mask)
        pts = np.zeros((0, 2), np.float32) if pts is None else pts[:, 0].astype(np.float32)
        if c.grid > 1 and c.cell_min > 0:
            _clear_around(mask, pts, c.min_distance)  # the mask now keeps clear of every point, old and new
            pts = np.r_[pts, self._sparse_cells(gray, mask, np.r_[self._cur_pts, pts])]
        if not len(pts):
            return
        ids = np.arange(self._next_id, self._next_id + len(pts))
        self._next_id += len(pts)
        self._ids = np.r_[self._ids, ids]
        self._cur_pts = np.r_[self._cur_pts, pts].astype(np.float32)

    def _sparse_cells(self, gray: np.ndarray, mask: np.ndarray, have: np.ndarray) -> np.ndarray:
        """``[N, 2]`` more corners in the grid cells holding fewer than ``cell_min`` of the points ``have``
        (``mask``: where corners may go, already clear of ``have`` by ``min_distance``)."""
        c = self.config
        g = int(c.grid)
        h, w = gray.shape
        count = np.bincount(_cell_of(have[:, 0], have[:, 1], g, h, w), minlength=g * g)
        found = [np.zeros((0, 2), np.float32)]
        for k in np.flatnonzero(count < c.cell_min):
            r, q = divmod(int(k), g)
            y0, y1, x0, x1 = r * h // g, (r + 1) * h // g, q * w // g, (q + 1) * w // g
            m = np.ascontiguousarray(mask[y0:y1, x0:x1])
            if not m.any():
                continue
            pts = cv2.goodFeaturesToTrack(gray[y0:y1, x0:x1], c.cell_min - int(count[k]), c.quality, c.min_distance,
                                          mask=m)
            if pts is not None:
                found.append(pts[:, 0] + np.array([x0, y0], np.float32))
        return np.concatenate(found).astype(np.float32)

    def _new_keyframe(self, t: int) -> None:
        self._key, self._key_ids, self._key_pts = t, self._ids.copy(), self._cur_pts.copy()

    def step(self, rgb: np.ndarray, hands_px: list[np.ndarray]) -> None:
        """Add one frame: uint8 RGB ``[H, W, 3]`` and the hands' ``[21, 2]`` pixel landmarks (to mask)."""
        c = self.config
        t = len(self.rel)
        self._solved = None
        gray, allowed = self._prepare(rgb, hands_px)
        if self._prev is None:
            self.rel.append((0, np.eye(3), np.zeros(3), np.nan, "key"))
            self._replenish(gray, allowed)
            self._obs.append((self._ids.copy(), self._cur_pts.copy()))
            self._new_keyframe(t)
            self._prev = gray
            return
        if len(self._cur_pts):
            p0 = self._cur_pts.reshape(-1, 1, 2)
            lk = dict(winSize=(_LK_WINDOW, _LK_WINDOW), maxLevel=3)
            p1, st, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, p0, None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._prev, p1, None, **lk)
            ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - p0, axis=2)[:, 0] < c.fb_px)
            p1 = p1[:, 0]
            h, w = gray.shape
            ok &= (p1[:, 0] >= 0) & (p1[:, 0] < w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] < h - 1)
            ok[ok] &= allowed[p1[ok, 1].astype(int), p1[ok, 0].astype(int)] > 0
            self._ids, self._cur_pts = self._ids[ok], p1[ok]
        self.tracked.append(len(self._cur_pts))
        key = self._key
        rel, rot, common, ik, ic = self._against_key(key, self._key_ids, self._key_pts, self._ids, self._cur_pts)
        kind = rel[4]
        self.rel.append(rel)
        self._rot_only.append(rot)
        self._prev = gray
        flow = np.median(np.linalg.norm(self._cur_pts[ic] - self._key_pts[ik], axis=1)) if len(common) else 0.0
        self._replenish(gray, allowed)
        self._obs.append((self._ids.copy(), self._cur_pts.copy()))
        if (kind == "none" or len(common) < c.keyframe_keep * max(len(self._key_ids), 1) or flow > c.keyframe_flow_px
                or t - key >= c.keyframe_every):
            self._new_keyframe(t)

    def _against_key(self, key: int, key_ids: np.ndarray, key_pts: np.ndarray, ids: np.ndarray,
                     pts: np.ndarray) -> tuple:
        """Pose of a frame (tracks ``ids`` at ``pts``) against keyframe ``key`` (its tracks and positions).

        Returns ``(rel entry, rotation-only model, common ids, their index in the keyframe, in the frame)``
        and counts the epipolar votes of the common tracks.
        """
        common, ik, ic = np.intersect1d(key_ids, ids, assume_unique=True, return_indices=True)
        p1, p2 = key_pts[ik].astype(np.float64), pts[ic].astype(np.float64)
        self._last_rot = np.eye(3)
        R, tv, depth, kind = self._estimate(p1, p2)
        self._epipolar_check(common, p1, p2)
        return (key, R, tv, depth, kind), self._last_rot, common, ik, ic

    def remask(self, hands_px: list[list[np.ndarray]], dilate: float) -> int:
        """Drop the observations on hands given after the fact, then redo the keyframe poses and track votes.

        The online masks come from each frame's own detections; the pipeline calls this with the
        cleaned tracks (short gaps filled, lost hands held a few frames), so hands missed in single
        frames stop feeding the solver. ``hands_px``: per frame the hands' ``[21, 2]`` pixel landmarks
        (input resolution); ``dilate``: mask dilation (fraction of the hand's box diagonal), halved in a
        frame (down to the outline) where it would leave less than ``config.remask_keep`` of its tracks. A
        track inside a hand's outline (``config.track_mask_dilate``) in any frame goes from every frame.
        Returns the number of observations removed (nothing is redone when none is).
        """
        if self._prev is None:
            return 0
        h, w = self._prev.shape
        removed = 0
        on_hand: list[np.ndarray] = []  # tracks seen inside a hand's own outline: on the hand all their life
        for t, hands in enumerate(hands_px[:len(self._obs)]):
            ids, pts = self._obs[t]
            if not hands or not len(ids):
                continue
            scaled = [p * self._scale for p in hands]
            xy = np.clip(pts.astype(int), 0, [w - 1, h - 1])
            for shrink in (1.0, 0.5, 0.25, 0.125, 0.0):  # a frame left without tracks is unconstrained:
                mask = hand_mask_from_landmarks(scaled, h, w, dilate * shrink)  # shrink its mask, never empty it
                keep = mask[xy[:, 1], xy[:, 0]] == 0
                if keep.sum() >= self.config.remask_keep * len(ids):
                    break
            if self.config.track_mask_dilate >= 0:
                tight = hand_mask_from_landmarks(scaled, h, w, self.config.track_mask_dilate, arm=False)
                on_hand.append(ids[tight[xy[:, 1], xy[:, 0]] > 0])
            removed += int((~keep).sum())
            self._obs[t] = (ids[keep], pts[keep])
        if on_hand:
            hand_ids = np.unique(np.concatenate(on_hand))
            for t, (ids, pts) in enumerate(self._obs):
                keep = ~np.isin(ids, hand_ids)
                removed += int((~keep).sum())
                self._obs[t] = (ids[keep], pts[keep])
        if removed:
            self._tested[:] = 0
            self._rejected[:] = 0
            for t in range(1, len(self.rel)):
                key = self.rel[t][0]
                self.rel[t], self._rot_only[t], *_ = self._against_key(key, *self._obs[key], *self._obs[t])
            self._solved = None
        log.debug("odometry: %d observations on hands removed after cleaning", removed)
        return removed

    def _epipolar_check(self, ids: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> None:
        """Count, per track, how often it falls outside the keyframe pair's RANSAC epipolar consensus.

        The consensus is the largest rigid motion: the scene. Points on an undetected hand, on a hand's
        shadow or on a moved object disagree with it again and again; the bundle adjustment leaves out
        tracks that do so too often (``outlier_tracks``), as their coherent motion can pull it into a
        wrong minimum.
        """
        c = self.config
        if len(ids) < max(c.min_points, 8):
            return
        moved = np.linalg.norm(p2 - p1, axis=1)
        if np.median(moved) < 2 * c.ransac_px:
            return  # too little motion since the keyframe to tell movers apart
        K = self.K.copy()
        K[:2] *= self._scale
        E, mask = cv2.findEssentialMat(p1, p2, K, cv2.RANSAC, 0.999, c.ransac_px)
        if E is None or mask is None or E.shape != (3, 3):
            return
        n = int(ids.max()) + 1
        if len(self._tested) < n:
            grow = n - len(self._tested) + 1024
            self._tested = np.r_[self._tested, np.zeros(grow, np.int32)]
            self._rejected = np.r_[self._rejected, np.zeros(grow, np.int32)]
        self._tested[ids] += 1
        self._rejected[ids] += mask[:, 0] == 0

    def _cell_rank(self, ids: np.ndarray, uv: np.ndarray, length: np.ndarray) -> np.ndarray:
        """``[n]`` per track id: its rank by ``length [n]`` (longest first; 0: not a candidate, ranked ``n``)
        among the tracks whose median position (observations ``ids [N]``, ``uv [N, 2]``) falls in the same cell
        of a ``solve_grid`` split of the frame."""
        n = len(length)
        cell = _cell_of(_median_by(ids, uv[:, 0], n), _median_by(ids, uv[:, 1], n), int(self.config.solve_grid),
                        *self._prev.shape)  # the odometry frame's (height, width)
        order = np.lexsort((-length, cell))
        start = np.searchsorted(cell[order], cell[order], side="left")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - start
        rank[length == 0] = n
        return rank

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
        R_rot = kabsch_rotation(u1[inl], u2[inl])
        self._last_rot = R_rot
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

    def chained_c2w(self, scene_depth: float = 0.5) -> np.ndarray:
        """``[T, 4, 4]`` camera-to-world from the chained keyframe poses alone (the bundle adjustment's start)."""
        poses: list[np.ndarray] = []
        for key, R, t, depth, _ in self.rel:
            rel = np.eye(4)  # keyframe camera -> this camera
            rel[:3, :3] = R
            if np.isfinite(depth) and depth > 0:
                rel[:3, 3] = t * (scene_depth / depth)
            poses.append(np.eye(4) if not poses else poses[key] @ np.linalg.inv(rel))
        return np.stack(poses).astype(np.float32)

    def rotation_c2w(self) -> np.ndarray:
        """``[T, 4, 4]`` camera-to-world chaining only the rotation-only model (no translation)."""
        poses: list[np.ndarray] = []
        for (key, *_), R in zip(self.rel, self._rot_only, strict=True):
            rel = np.eye(4)
            rel[:3, :3] = R
            poses.append(np.eye(4) if not poses else poses[key] @ rel.T)
        return np.stack(poses)

    def solve(self, depth: float = 1.0) -> dict | None:
        """Bundle-adjust the chained poses over all tracks (cached until the next ``step``); None when off/too short.

        Runs with ``config.threads`` BLAS threads whatever the environment says, so a video gives the same
        trajectory in every process."""
        if not self.config.bundle or len(self.rel) < 3:
            return None
        if self._solved is not None and self._solved["depth"] == depth:
            return self._solved
        if all(r[4] in ("key", "static", "rotation") for r in self.rel):
            return None  # no step needed translation: the rotation-only poses stand (planar/far scenes are ambiguous)
        with threadpool_limits(limits=self.config.threads, user_api="blas"):
            return self._solve(depth)

    def _solve(self, depth: float) -> dict:
        t0 = time.perf_counter()
        frames = np.concatenate([np.full(len(ids), f) for f, (ids, _) in enumerate(self._obs)])
        ids = np.concatenate([ids for ids, _ in self._obs])
        uv = np.concatenate([uv for _, uv in self._obs]).astype(np.float64) + 0.5  # pixel centres at i + 0.5
        n = int(ids.max()) + 1 if len(ids) else 0
        tested, rejected = np.zeros(n), np.zeros(n)
        m = min(n, len(self._tested))
        tested[:m], rejected[:m] = self._tested[:m], self._rejected[:m]
        good = rejected <= self.config.outlier_tracks * np.maximum(tested, 1)
        length = np.bincount(ids, minlength=n)
        if self.config.solve_cap > 0:
            good &= self._cell_rank(ids, uv, np.where(good, length, 0)) < self.config.solve_cap
        if good.sum() > self.config.max_points:  # the longest tracks carry the most geometry
            good &= length >= np.sort(length[good])[-self.config.max_points]
        sel = good[ids]
        frames, ids, uv = frames[sel], ids[sel], uv[sel]
        _, point = np.unique(ids, return_inverse=True)
        K = self.K.copy()
        K[:2] *= self._scale
        self._ba_inputs = (K, frames, point, uv, depth)
        outs = []
        for init in self.config.ba_inits:  # multi-start
            seed, _, direction = init.partition("-")
            c2w0 = self.rotation_c2w() if seed == "rotation" else self.chained_c2w(depth).astype(np.float64)
            out = self._adjust(np.linalg.inv(c2w0), reverse=direction == "reversed")
            out["init"] = init
            log.debug("odometry: bundle from %s poses: cost %.1f, rms %.2f px", init, out["cost"], out["rms_px"])
            outs.append(out)
        out = _select(outs, self.config.select_margin)
        w2c = np.linalg.inv(_c2w(out))
        # guard: a solve that lands in a wrong minimum departs from the chained poses by far more than their
        # own error (a few degrees per 16 frames); then the chained poses are kept, if they explain the tracks
        # about as well (a chain that went astray costs 1.5-10x more and is worse than any adjustment)
        chained = self.chained_c2w(depth).astype(np.float64)
        gap = _max_window_gap(np.linalg.inv(w2c), chained, 16)
        used, chained_cost, kept_cost = "bundle", None, out["cost"]
        if gap > self.config.fallback_deg:  # ... unless they explain the tracks clearly worse (the same common cost)
            w2c_ch = np.linalg.inv(chained)
            chained_cost = self._common_cost(w2c_ch)
            if chained_cost <= (1.0 + self.config.fallback_cost_margin) * out["cost"]:
                log.info("odometry: bundle adjustment departs %.1f deg from the chained poses, which explain the "
                         "tracks as well; keeping the chained ones", gap)
                used, w2c, kept_cost = "chained", w2c_ch, chained_cost
        self.solve_ms = (time.perf_counter() - t0) * 1000
        self._solved = {"depth": depth, "c2w": np.linalg.inv(w2c), "rms_px": out["rms_px"], "points": out["points"],
                        "used": used, "gap_deg": gap, "init": out["init"], "cost": out["cost"],
                        "chained_cost": chained_cost, "kept_cost": kept_cost,
                        "observations": int(out["inliers"].sum())}
        return self._solved

    def _common_cost(self, w2c: np.ndarray) -> float:
        """``trajectory_cost`` of world-to-camera poses ``[T, 4, 4]`` over the last solve's tracks."""
        K, frames, point, uv, depth = self._ba_inputs
        return trajectory_cost(w2c[:, :3, :3], w2c[:, :3, 3], K, frames, point, uv, depth, self._bundle)

    def _adjust(self, w2c: np.ndarray, reverse: bool = False) -> dict:
        """The incremental bundle adjustment over the last solve's tracks, started from ``w2c [T, 4, 4]``;
        its result gets ``cost`` (``_common_cost`` of the adjusted poses)."""
        K, frames, point, uv, depth = self._ba_inputs
        out = incremental_bundle(w2c[:, :3, :3], w2c[:, :3, 3], K, frames, point, uv, depth, self._bundle,
                                 reverse=reverse)
        out["cost"] = trajectory_cost(out["R"], out["t"], K, frames, point, uv, depth, self._bundle)
        return out

    @property
    def _bundle(self) -> BundleConfig:
        """The adjustment's settings with the motion prior per frame at ``fps`` (``head_speed``, ``head_turn_deg``)."""
        c = self.config
        return replace(c.ba, step_sigma=c.head_speed / self.fps, turn_sigma_deg=c.head_turn_deg / self.fps ** 2)

    @property
    def solved(self) -> dict | None:
        """The last bundle adjustment's outcome (``c2w``, ``used``, ``cost``, ...), None before one ran."""
        return self._solved

    def explain(self, c2w: np.ndarray) -> dict | None:
        """How well another trajectory explains the tracks of the last solve (validation against ground truth).

        ``c2w [T, 4, 4]``: camera-to-world with the first camera as world and translations in the solve's
        scale (metres at the hand-prior depth). Returns ``cost`` (the common robust cost of these poses,
        points refitted; the kept solution's is ``solved["kept_cost"]``) and ``refined_cost`` /
        ``refined_c2w`` (the same adjustment as the solve, started from these poses), or None without a solve.
        """
        if self._solved is None:
            return None
        w2c = np.linalg.inv(np.asarray(c2w, np.float64))
        with threadpool_limits(limits=self.config.threads, user_api="blas"):
            out = self._adjust(w2c)
            return {"cost": self._common_cost(w2c), "refined_cost": out["cost"], "refined_c2w": _c2w(out)}

    def c2w(self, scene_depth: float = 0.5) -> np.ndarray:
        """``[T, 4, 4]`` camera-to-world (world = first camera), translation scaled to ``scene_depth`` m.

        Bundle-adjusted (``config.bundle``, the default) or the chained keyframe poses.
        """
        solved = self.solve(scene_depth)
        if solved is None:
            return self.chained_c2w(scene_depth)
        return solved["c2w"].astype(np.float32)

    def summary(self) -> dict:
        """Counts of the motion models chosen, tracked points and the bundle adjustment's outcome."""
        kinds = [r[4] for r in self.rel[1:]]
        out = {"steps": len(kinds), **{k: kinds.count(k) for k in ("static", "rotation", "essential", "none")},
               "keyframes": len({r[0] for r in self.rel}),
               "median_tracked_points": float(np.median(self.tracked)) if self.tracked else 0.0}
        if self._solved is not None:
            out["bundle"] = {k: self._solved[k] for k in ("rms_px", "points", "observations", "used", "gap_deg",
                                                           "init", "cost", "chained_cost")}
            out["bundle"]["solve_ms"] = self.solve_ms
        return out
