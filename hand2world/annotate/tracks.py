"""Hand tracks over a whole video: identity, outlier rejection, gap filling, zero-phase smoothing.

The annotation pipeline sees the whole video before it fits anything, so unlike the live
path (``ControlPipeline``: causal One-Euro filter) it cleans landmarks offline.

Design choices:
- Identity: per-frame MediaPipe detections are linked into tracks by image-landmark distance
  (normalised by the hand's size; greedy, nearest first) while a track has been lost for at
  most ``max_lost`` frames; a later re-detection near the old position continues the track.
  A track's side is the score-weighted majority of MediaPipe's per-frame handedness labels,
  so a label that flips for a few frames does not swap the hands. Two tracks that claim the
  same side at the same time (one person has one left hand): the weaker one takes the other
  side when it is free there, else its overlapping frames are dropped.
- Outliers: a frame is rejected when its image landmarks sit far from the temporal median of
  its neighbours (``jump_thresh`` x the hand's size); segments shorter than ``min_segment``
  frames are dropped as spurious.
- Size: a person's hand does not change size, but MediaPipe's metric world landmarks do
  (their summed bone length varies by up to +-70 % over the real cup video, worst while the
  fingers wrap the cup). Rejecting such frames would drop a third of them, so instead each
  frame's world landmarks are rescaled to one size per side (``normalize_size``): the side's
  median, or a given ``hand_size_m`` (the pipeline passes the hand model's mean-shape size when
  ``AnnotateConfig.hand_size="model"``, a population prior).
- Gaps of at most ``max_gap`` frames between kept frames of a side are filled by linear
  interpolation (image and world landmarks); longer gaps stay empty.
- Smoothing: a Gaussian filter along time (``sigma`` frames, zero phase: no lag), per
  contiguous segment, with renormalised weights at segment ends.

Arrays: ``image [T, 2, 21, 2]`` MediaPipe-normalised (x / W, y / H); ``world [T, 2, 21, 3]``
metres, hand-centred; ``valid [T, 2]`` bool; hand index 0 = left, 1 = right (``SIDES``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hand2world.hands.skeleton import SIDES
from hand2world.render import HAND_BONES

log = logging.getLogger(__name__)

__all__ = ["HandTracks", "TrackConfig", "build_tracks", "clean_tracks", "hand_size", "mask_landmarks",
           "smooth_segments", "smooth_tracks"]


@dataclass(frozen=True)
class TrackConfig:
    """Settings of track linking and cleaning (frozen; saved in the QA report)."""

    max_lost: int = 15  # frames a track may be lost and still continue
    link_thresh: float = 1.0  # max mean landmark distance, in hand sizes, to continue a track
    jump_thresh: float = 0.5  # outlier: distance from the neighbours' median, in hand sizes
    normalize_size: bool = True  # rescale world landmarks to one hand size per side ...
    hand_size_m: float | None = None  # ... this one (summed bone length, m), or None: the side's median
    min_segment: int = 3  # segments shorter than this are dropped
    max_gap: int = 6  # gaps up to this many frames are interpolated
    sigma: float = 1.0  # Gaussian smoothing along time, frames (0 disables)


@dataclass
class HandTracks:
    """Per-frame landmarks of both hands (see module docstring for shapes).

    Attributes:
        image: float32 [T, 2, 21, 2] normalised image landmarks.
        world: float32 [T, 2, 21, 3] metric hand-centred landmarks.
        valid: bool [T, 2] a hand of that side is present.
        score: float32 [T, 2] MediaPipe handedness score (0 where absent or interpolated).
        interpolated: bool [T, 2] filled by interpolation (not observed).
    """

    image: np.ndarray
    world: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    interpolated: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.interpolated is None:
            self.interpolated = np.zeros_like(self.valid)

    @classmethod
    def empty(cls, frames: int) -> HandTracks:
        return cls(np.zeros((frames, 2, 21, 2), np.float32), np.zeros((frames, 2, 21, 3), np.float32),
                   np.zeros((frames, 2), bool), np.zeros((frames, 2), np.float32))

    def copy(self) -> HandTracks:
        return HandTracks(self.image.copy(), self.world.copy(), self.valid.copy(), self.score.copy(),
                          self.interpolated.copy())

    def __len__(self) -> int:
        return self.valid.shape[0]


def hand_size(world: np.ndarray) -> np.ndarray:
    """Sum of the 20 bone lengths of metric landmarks ``[..., 21, 3]`` -> ``[...]`` (metres)."""
    a, b = np.array(HAND_BONES).T
    return np.linalg.norm(world[..., a, :] - world[..., b, :], axis=-1).sum(-1)


def _extent(image: np.ndarray) -> float:
    """Size of a hand in normalised image units: its landmarks' box diagonal."""
    return float(np.linalg.norm(image.max(0) - image.min(0))) + 1e-6


@dataclass
class _Track:
    last: np.ndarray
    last_t: int
    members: list = field(default_factory=list)  # (t, hand)
    votes: dict = field(default_factory=lambda: {s: 0.0 for s in SIDES})


def build_tracks(detections: Sequence[Sequence], config: TrackConfig = TrackConfig()) -> HandTracks:
    """Link per-frame detections into at most one hand per side per frame.

    Args:
        detections: per frame a list of hands with ``side``, ``score``, ``image [21, >=2]``
            (normalised) and ``world [21, 3]`` (e.g. ``TrackedHand``).
    Returns:
        ``HandTracks`` of the observed (uncleaned) landmarks.
    """
    tracks: list[_Track] = []
    for t, hands in enumerate(detections):
        live = [k for k, tr in enumerate(tracks) if t - tr.last_t <= config.max_lost]
        pairs = []
        for j, hand in enumerate(hands):
            img = np.asarray(hand.image, np.float32)[:, :2]
            for k in live:
                d = float(np.linalg.norm(img - tracks[k].last, axis=1).mean()) / _extent(tracks[k].last)
                if d <= config.link_thresh:
                    pairs.append((d, j, k))
        used_d: set[int] = set()
        used_t: set[int] = set()
        assigned: dict[int, int] = {}
        for _, j, k in sorted(pairs):
            if j not in used_d and k not in used_t:
                used_d.add(j)
                used_t.add(k)
                assigned[j] = k
        for j, hand in enumerate(hands):
            k = assigned.get(j)
            if k is None:
                tracks.append(_Track(last=np.zeros((21, 2), np.float32), last_t=t))
                k = len(tracks) - 1
            tr = tracks[k]
            tr.last, tr.last_t = np.asarray(hand.image, np.float32)[:, :2], t
            tr.members.append((t, hand))
            tr.votes[hand.side] += max(float(hand.score), 1e-3)
    out = HandTracks.empty(len(detections))
    order = sorted(tracks, key=lambda tr: -sum(tr.votes.values()))
    for tr in order:
        side = max(SIDES, key=lambda s: tr.votes[s])
        times = np.array([t for t, _ in tr.members])
        if out.valid[times, SIDES.index(side)].any():  # the other side is the only one this hand can be
            other = SIDES[1 - SIDES.index(side)]
            if not out.valid[times, SIDES.index(other)].any():
                log.debug("track of %d frames relabelled %s -> %s (overlap)", len(times), side, other)
                side = other
        s = SIDES.index(side)
        for t, hand in tr.members:
            if out.valid[t, s]:
                continue
            out.image[t, s] = np.asarray(hand.image, np.float32)[:, :2]
            out.world[t, s] = np.asarray(hand.world, np.float32)
            out.valid[t, s] = True
            out.score[t, s] = hand.score
    return out


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous True runs of a 1-D mask as ``(start, stop)``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def smooth_segments(x: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing of ``x [T, ...]`` along time within each valid run of ``valid [T]``."""
    if sigma <= 0:
        return x.copy()
    radius = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    out = x.copy()
    flat = x.reshape(len(x), -1).astype(np.float64)
    for a, b in _segments(valid):
        seg = flat[a:b]
        n = b - a
        acc = np.zeros_like(seg)
        wsum = np.zeros((n, 1))
        for off, w in zip(range(-radius, radius + 1), k, strict=True):
            lo, hi = max(0, -off), min(n, n - off)
            if lo >= hi:
                continue
            acc[lo:hi] += w * seg[lo + off:hi + off]
            wsum[lo:hi] += w
        out.reshape(len(x), -1)[a:b] = acc / wsum
    return out


def smooth_tracks(tracks: HandTracks, sigma: float) -> HandTracks:
    """A copy of ``tracks`` with each side's landmarks smoothed along time (``smooth_segments``), zero where
    absent: the last step of ``clean_tracks``, also applied on its own with another ``sigma``."""
    out = tracks.copy()
    for s in range(2):
        valid = out.valid[:, s]
        out.image[:, s] = smooth_segments(out.image[:, s], valid, sigma)
        out.world[:, s] = smooth_segments(out.world[:, s], valid, sigma)
        out.image[~valid, s] = 0.0
        out.world[~valid, s] = 0.0
    return out


def clean_tracks(tracks: HandTracks, config: TrackConfig = TrackConfig()) -> tuple[HandTracks, dict]:
    """Reject outliers, drop short segments, interpolate short gaps, smooth (see module docstring).

    Returns:
        The cleaned tracks and counts ``{"rejected", "dropped_short", "interpolated"}`` per side.
    """
    out = tracks.copy()
    stats = {"rejected": [0, 0], "dropped_short": [0, 0], "interpolated": [0, 0]}
    T = len(out)
    for s in range(2):
        idx = np.flatnonzero(out.valid[:, s])
        if idx.size == 0:
            continue
        # 1. one hand size; outliers against the neighbours' median
        if config.normalize_size:
            sizes = hand_size(out.world[idx, s])
            target = config.hand_size_m or float(np.median(sizes))
            out.world[idx, s] *= (target / np.maximum(sizes, 1e-6))[:, None, None]
        bad = np.zeros(idx.size, bool)
        img = out.image[idx, s]
        for n in range(idx.size):
            lo, hi = max(0, n - 2), min(idx.size, n + 3)
            if hi - lo < 3:
                continue
            neighbours = np.delete(img[lo:hi], n - lo, axis=0)
            med = np.median(neighbours, axis=0)
            d = float(np.linalg.norm(img[n] - med, axis=1).mean()) / _extent(med)
            bad[n] |= d > config.jump_thresh
        out.valid[idx[bad], s] = False
        stats["rejected"][s] = int(bad.sum())
        # 2. short segments
        for a, b in _segments(out.valid[:, s]):
            if b - a < config.min_segment:
                out.valid[a:b, s] = False
                stats["dropped_short"][s] += int(b - a)
        # 3. gaps
        idx = np.flatnonzero(out.valid[:, s])
        for p, q in zip(idx[:-1], idx[1:], strict=True):
            if 1 < q - p <= config.max_gap + 1:
                w = ((np.arange(p + 1, q) - p) / (q - p))[:, None, None]
                out.image[p + 1:q, s] = (1 - w) * out.image[p, s] + w * out.image[q, s]
                out.world[p + 1:q, s] = (1 - w) * out.world[p, s] + w * out.world[q, s]
                out.valid[p + 1:q, s] = True
                out.interpolated[p + 1:q, s] = True
                out.score[p + 1:q, s] = 0.0
                stats["interpolated"][s] += int(q - p - 1)
    log.debug("tracks cleaned over %d frames: %s", T, stats)
    return smooth_tracks(out, config.sigma), stats  # 4. smoothing


def mask_landmarks(tracks: HandTracks, hold: int, grow: float = 0.15) -> list[list[np.ndarray]]:
    """Per frame, the image landmarks ``[21, 2]`` (normalised) of every hand to keep out of the camera solve.

    Each side's valid frames, plus up to ``hold`` frames before and after each valid run: there the
    nearest valid frame's landmarks, spread about their centre by ``grow`` per frame of distance (the
    hand moved on while undetected). Detection of synthetic and fast-moving hands is patchy, and a
    hand that is not masked is a large coherent mover for the trajectory solver.
    """
    T = len(tracks)
    out: list[list[np.ndarray]] = [[] for _ in range(T)]
    for s in range(2):
        idx = np.flatnonzero(tracks.valid[:, s])
        if idx.size == 0:
            continue
        for t in range(T):
            n = int(idx[np.argmin(np.abs(idx - t))])
            gap = abs(n - t)
            if gap > hold:
                continue
            pts = tracks.image[n, s]
            centre = pts.mean(0, keepdims=True)
            out[t].append(centre + (pts - centre) * (1.0 + grow * gap))
    return out
