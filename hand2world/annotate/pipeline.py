"""Monocular annotation: plain egocentric video -> hand meshes + camera trajectory -> training clips.

Stages (each with a progress bar, each timed):
1. ``track``: decode; MediaPipe HandLandmarker in video mode (two hands; it re-runs palm
   detection whenever fewer than two hands are tracked, so a lost hand is re-detected);
   the visual odometry (``camera.VisualOdometry``) steps on the same frames with the raw
   landmarks' hulls masked out (timed separately as ``trajectory``).
2. ``clean``: tracks with consistent left/right identity, outlier rejection, short-gap
   interpolation and zero-phase smoothing (``tracks``).
3. ``fit``: per frame, the cleaned landmarks (smoothed over ``fit_smooth`` frames; the odometry's
   hand masks use the less smoothed ``tracks.sigma``) go through the live path's ``ControlPipeline``
   (warm-started fit of the hand model, control render at clip resolution) with its causal
   One-Euro filter disabled (smoothing already happened, without lag). Open hand model by
   default; ``kind="auto"`` uses MANO when its files are present.
4. ``write``: the camera trajectory gets its metric scale from the fitted hands' median depth
   (see ``camera``), frames are cut into clips of ``clip_frames`` and written with
   ``ClipWriter`` in the ``hand2world.data`` format.
5. ``qa``: the per-video report (``qa.write_report``).

Fields a monocular video cannot give are written as the format requires but documented as
absent in each clip's ``meta["absent"]``: ``depth`` is all zeros (0 = "no surface"), and
``visible_mask`` equals ``hand_mask`` (occlusion by objects is not recovered). ``c2w`` is
metric only up to the hand-size prior (``meta["scale"]``).

Intrinsics: ``K`` in pixels of the input video, else a horizontal field of view (default 60°,
the project's convention, principal point at the centre). Clips are resized so their short
side is ``size`` pixels, with ``K`` scaled exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from hand2world.annotate.camera import OdometryConfig, VisualOdometry
from hand2world.annotate.tracks import (
    HandTracks,
    TrackConfig,
    build_tracks,
    clean_tracks,
    mask_landmarks,
    smooth_tracks,
)
from hand2world.conditioning import ControlConfig, ControlPipeline
from hand2world.data import ClipWriter, actions_from
from hand2world.geometry import intrinsics_from_fov, project
from hand2world.hands.skeleton import SIDES

log = logging.getLogger(__name__)

__all__ = ["AnnotateConfig", "Annotation", "annotate_frames", "annotate_video", "clip_size", "clip_starts",
           "fit_tracks", "resolve_kind"]

NO_SMOOTHING = 1e9  # One-Euro cutoff (Hz) that passes samples through unchanged


@dataclass(frozen=True)
class AnnotateConfig:
    """Settings of one annotation run (frozen; saved in the QA report and each clip's meta)."""

    size: int = 256  # short side of the written clips, pixels
    clip_frames: int = 33  # frames per written clip (the last, shorter clip is kept if >= half this)
    fov_deg: float = 60.0  # horizontal field of view used when no K is given
    kind: str = "open"  # hand model: "open", "mano" or "auto" (MANO when present, else open)
    mirrored: bool = False  # frames are selfie-mirrored
    split: str = "train"
    default_scene_depth: float = 0.5  # metres, used for the trajectory's scale when no hand is seen
    fit_sigma_world: float = 0.1  # metres per unit 3-D residual: offline, MediaPipe's image landmarks are trusted
    # far more than its 3-D ones (rigid MPJPE on synthetic clips 21 -> 13 mm; docs/annotation.md, "Hands")
    fit_sigma_image: float = 2.0  # pixels of the input video per unit reprojection residual
    fit_refine_iters: int = 15  # warm-started joint 3-D + reprojection iterations per frame (the weak 3-D term
    # converges more slowly: 6 left the cup video at 2.4 px median, 10 px p95; they stop early once converged)
    fit_shape_prior: float = 1.0  # weight of the fit's shape prior (live: 0.3). The image fixes a hand's
    # proportions, not its size: with the weak 3-D term the shape drifted to hands 10-35 % too small, nearer
    # the camera (rigid MPJPE 14.3 -> 12.0 mm on 19 synthetic clips; docs/annotation.md, "A motion prior ...")
    fit_smooth: float = 2.0  # Gaussian smoothing along time (frames) of the landmarks the fit sees; the hand masks
    # of the odometry keep ``tracks.sigma`` (1: smoothing lags a fast hand, and its mask with it). 2 frames:
    # median hand MPJPE over ten synthetic seeds 10.1 mm against 10.6 (1) and 10.2 (3), docs/annotation.md
    threads: int = 1  # torch threads for the fit (tiny problems: more threads only add contention)
    hand_size: str = "model"  # hand scale: "model" (the hand model's mean shape, a population prior) or
    # "mediapipe" (the median of its metric landmarks: 22 mm rigid MPJPE on synthetic GT against 12 mm)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)


@dataclass
class Annotation:
    """Everything recovered from one video (``T`` frames; hand index 0 = left, 1 = right).

    Attributes:
        frames: uint8 [T, h, w, 3] frames at clip resolution.
        control: uint8 [T, h, w, 3] control renders.
        K: float32 [3, 3] intrinsics of the clip resolution; K_input of the input frames.
        c2w: float32 [T, 4, 4] camera-to-world (world = first camera; metric via the hand prior).
        joints3d: float32 [T, 2, 21, 3] fitted joints in camera coordinates, NaN where absent.
        hand_params: float32 [T, 2, 61] HandPose vectors, NaN where absent.
        raw, clean: landmark tracks before and after cleaning (normalised image coordinates).
        reproj_px: float32 [T, 2] median reprojection error of the fitted joints against the
            cleaned image landmarks, pixels of the input frames; NaN where absent.
        timings: stage -> list of per-frame milliseconds (``trajectory`` separately).
    """

    frames: np.ndarray
    control: np.ndarray
    K: np.ndarray
    K_input: np.ndarray
    c2w: np.ndarray
    joints3d: np.ndarray
    hand_params: np.ndarray
    raw: HandTracks
    clean: HandTracks
    reproj_px: np.ndarray
    fps: float
    input_size: tuple[int, int]  # (width, height)
    timings: dict[str, list[float]]
    stats: dict = field(default_factory=dict)
    odometry: VisualOdometry | None = None  # the solved odometry (validation asks it about other trajectories)


def clip_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side ``size``, both even."""
    s = size / min(width, height)
    return int(round(width * s / 2)) * 2, int(round(height * s / 2)) * 2


def resolve_kind(kind: str, mano_dir: str | None = None) -> str:
    """``"auto"`` -> ``"mano"`` when the MANO files can be found, else ``"open"``; others unchanged."""
    if kind != "auto":
        return kind
    try:
        from hand2world.hands.mano import find_mano_file

        find_mano_file("right", mano_dir)
        return "mano"
    except (FileNotFoundError, OSError, ValueError):
        return "open"


@dataclass
class _Hand:
    side: str
    image: np.ndarray
    world: np.ndarray


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def annotate_frames(frames: Iterable[np.ndarray], fps: float, config: AnnotateConfig = AnnotateConfig(),
                    K: np.ndarray | None = None, total: int | None = None, mano_dir: str | None = None,
                    tracker=None) -> Annotation:
    """Annotate a sequence of uint8 RGB frames ``[H, W, 3]`` (all the same size).

    Args:
        frames: the video's frames in order (any iterable; streamed once).
        fps: frame rate (timestamps for tracking).
        config: run settings.
        K: ``[3, 3]`` intrinsics in pixels of the input frames; default from ``config.fov_deg``.
        total: number of frames, for the progress bar only.
        mano_dir: MANO folder for ``kind="mano"``/``"auto"``.
        tracker: a ``HandTracker`` in video mode to use (default: a fresh one, two hands).
    """
    from hand2world.tracking import HandTracker

    timings: dict[str, list[float]] = {"decode": [], "track": [], "trajectory": [], "fit+render": []}
    own = tracker is None
    tracker = tracker or HandTracker(mode="video", num_hands=2, mirrored=config.mirrored)
    small: list[np.ndarray] = []
    detections: list[list] = []
    vo: VisualOdometry | None = None
    W = H = 0
    cw = ch = 0
    try:
        it = iter(frames)
        bar = tqdm(total=total, desc="annotate: track", unit="frame")
        i = 0
        while True:
            t0 = time.perf_counter()
            rgb = next(it, None)
            if rgb is None:
                break
            if vo is None:
                H, W = rgb.shape[:2]
                K_in = np.asarray(K if K is not None else intrinsics_from_fov(config.fov_deg, H, W), np.float64)
                cw, ch = clip_size(W, H, config.size)
                vo = VisualOdometry(K_in, config.odometry, fps=fps)
            small.append(cv2.resize(rgb, (cw, ch), interpolation=cv2.INTER_AREA))
            timings["decode"].append(_ms(t0))
            t0 = time.perf_counter()
            hands = tracker.detect(rgb, timestamp_ms=int(round(i * 1000 / fps)))
            timings["track"].append(_ms(t0))
            t0 = time.perf_counter()
            vo.step(rgb, [h.image_pixels(W, H) for h in hands])
            timings["trajectory"].append(_ms(t0))
            detections.append(hands)
            i += 1
            bar.update()
        bar.close()
    finally:
        if own:
            tracker.close()
    if vo is None:
        raise ValueError("no frames to annotate")
    T = len(detections)
    raw = build_tracks(detections, config.tracks)
    kind = resolve_kind(config.kind, mano_dir)
    track_cfg = config.tracks
    if config.hand_size == "model":
        from hand2world.annotate.tracks import hand_size
        from hand2world.hands import HandModel

        template = HandModel.load(kind, side="right", mano_dir=mano_dir).rest_joints()[0].detach().numpy()
        track_cfg = replace(track_cfg, hand_size_m=float(hand_size(template)))
    elif config.hand_size != "mediapipe":
        raise ValueError(f"hand_size must be 'mediapipe' or 'model', got {config.hand_size!r}")
    unsmoothed, clean_stats = clean_tracks(raw, replace(track_cfg, sigma=0.0))
    clean = smooth_tracks(unsmoothed, track_cfg.sigma)
    t0 = time.perf_counter()
    odo = config.odometry
    size_px = np.array([W, H], np.float32)
    remasked = vo.remask([[p * size_px for p in hands] for hands in mask_landmarks(clean, odo.remask_hold)],
                         odo.remask_dilate)
    timings["remask"] = [_ms(t0)]

    K_clip = K_in.copy()
    K_clip[0] *= cw / W
    K_clip[1] *= ch / H
    fit_in = smooth_tracks(unsmoothed, config.fit_smooth)  # the masks above used the cleaning's own sigma
    fitted = fit_tracks(fit_in, K_clip, (cw, ch), fps, config, input_width=W, kind=kind, mano_dir=mano_dir)
    joints3d = fitted["joints3d"]
    timings["fit+render"] = fitted["ms"]

    depths = joints3d[..., 0, 2][np.isfinite(joints3d[..., 0, 2])]
    scene_depth = float(np.median(depths)) if depths.size else config.default_scene_depth
    c2w = vo.c2w(scene_depth)
    stats = {"frames": T, "kind": kind, "clean": clean_stats, "odometry": {**vo.summary(), "remasked": remasked},
             "scale": {"scene_depth_m": scene_depth, "source": "hand prior" if depths.size else "default"}}
    return Annotation(frames=np.stack(small), control=fitted["control"], K=K_clip.astype(np.float32),
                      K_input=K_in.astype(np.float32), c2w=c2w, joints3d=joints3d, hand_params=fitted["hand_params"],
                      raw=raw, clean=clean, reproj_px=fitted["reproj_px"], fps=fps, input_size=(W, H),
                      timings=timings, stats=stats, odometry=vo)


def fit_tracks(tracks: HandTracks, K: np.ndarray, size: tuple[int, int], fps: float,
               config: AnnotateConfig = AnnotateConfig(), input_width: int | None = None, kind: str = "open",
               mano_dir: str | None = None) -> dict:
    """Fit hand meshes to cleaned tracks and render the control images (the live path's ``ControlPipeline``).

    Args:
        tracks: cleaned landmarks (``T`` frames; image coordinates normalised).
        K: ``[3, 3]`` intrinsics in pixels of the output ``size``.
        size: (width, height) of the control renders.
        fps: frame rate (timestamps).
        config: fit settings (``fit_*``, ``threads``).
        input_width: width of the frames the landmarks came from (reprojection errors are reported in
            their pixels; default ``size[0]``).
        kind: hand model kind ("open" or "mano").
    Returns:
        ``control`` uint8 [T, h, w, 3], ``joints3d`` float32 [T, 2, 21, 3] (camera coordinates, NaN absent),
        ``hand_params`` float32 [T, 2, 61], ``reproj_px`` float32 [T, 2] (median over joints, input
        pixels), ``ms`` per-frame milliseconds.
    """
    cw, ch = size
    to_input = (input_width or cw) / cw
    ctl = ControlPipeline(ControlConfig(height=ch, width=cw, kind=kind, smooth_min_cutoff=NO_SMOOTHING,
                                        smooth_beta=0.0, fit_sigma_world=config.fit_sigma_world,
                                        fit_sigma_image=config.fit_sigma_image / to_input,
                                        fit_refine_iters=config.fit_refine_iters,
                                        fit_shape_prior=config.fit_shape_prior), K=K, mano_dir=mano_dir)
    T = len(tracks)
    out = {"control": np.zeros((T, ch, cw, 3), np.uint8), "joints3d": np.full((T, 2, 21, 3), np.nan, np.float32),
           "hand_params": np.full((T, 2, 61), np.nan, np.float32), "reproj_px": np.full((T, 2), np.nan, np.float32),
           "ms": []}
    px = np.array([cw, ch], np.float32)
    K_t = torch.from_numpy(np.asarray(K, np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for t in tqdm(range(T), desc="annotate: fit", unit="frame"):
            t0 = time.perf_counter()
            hands = [_Hand(SIDES[s], tracks.image[t, s], tracks.world[t, s]) for s in range(2) if tracks.valid[t, s]]
            frame = ctl.process(hands, t / fps)
            for mesh in frame.meshes:
                s = SIDES.index(mesh.side)
                j = mesh.joints[0].numpy()
                out["joints3d"][t, s] = j
                out["hand_params"][t, s] = frame.poses[mesh.side].to_vector()[0].detach().numpy()
                err = np.linalg.norm(project(torch.from_numpy(j), K_t).numpy() - tracks.image[t, s] * px, axis=1)
                out["reproj_px"][t, s] = float(np.median(err)) * to_input
            out["control"][t] = frame.control
            out["ms"].append(_ms(t0))
    finally:
        torch.set_num_threads(threads)
    return out


def clip_starts(frames: int, clip_frames: int) -> list[int]:
    """First frames of the clips cut from ``frames`` frames (the last, shorter clip kept if >= half as long)."""
    n = clip_frames
    starts = list(range(0, max(frames - n, 0) + 1, n)) if frames >= n else [0]
    rest = frames - (starts[-1] + n)
    if rest >= max(1, n // 2):
        starts.append(frames - rest)
    return starts


def annotation_clips(ann: Annotation, config: AnnotateConfig, source: str) -> Iterator[dict]:
    """Cut an annotation into ``hand2world.data`` clips of ``config.clip_frames`` (see module docstring); lazily."""
    T = len(ann.frames)
    n = config.clip_frames
    for a in clip_starts(T, n):
        b = min(a + n, T)
        sl = slice(a, b)
        control = ann.control[sl]
        mask = control.any(-1)
        joints3d = ann.joints3d[sl]
        joints2d = project(torch.from_numpy(np.nan_to_num(joints3d)), torch.from_numpy(ann.K)).numpy()
        joints2d[np.isnan(joints3d[..., :2])] = np.nan
        c2w = ann.c2w[sl]
        yield {
            "video": ann.frames[sl], "control": control, "K": ann.K, "c2w": c2w, "joints3d": joints3d,
            "joints2d": joints2d.astype(np.float32), "hand_mask": mask, "visible_mask": mask.copy(),
            "depth": np.zeros(mask.shape, np.float32), "actions": actions_from(c2w, joints3d),
            "hand_params": ann.hand_params[sl], "hands_present": np.isfinite(joints3d[:, :, 0, 0]).any(0),
            "meta": {"action": "unlabelled", "split": config.split, "seed": -1, "fps": ann.fps, "source": source,
                     "frames": [a, b], "annotated": True, "hand_model": ann.stats["kind"],
                     "absent": ["depth (zeros)", "visible_mask (= hand_mask: occlusion not recovered)",
                                "object_poses", "object_info"],
                     "scale": ann.stats["scale"], "K_input": ann.K_input.tolist()},
        }


def annotate_video(videos: str | Path | list, out: str | Path, config: AnnotateConfig = AnnotateConfig(),
                   K: np.ndarray | None = None, max_frames: int | None = None, mano_dir: str | None = None,
                   qa: bool = True) -> list[dict]:
    """Annotate videos into one clip dataset at ``out`` (appending), with a QA report per video.

    Args:
        videos: a path or a list of paths (anything PyAV decodes, also ``.mp4.gz``).
        out: dataset folder; QA goes to ``out/qa/<video stem>/``.
        config: run settings.
        K: intrinsics in pixels of the input video (default from ``config.fov_deg``).
        max_frames: stop each video after this many frames.
        qa: write the QA report, trajectory plot and side-by-side MP4.
    Returns:
        Per video: the QA summary dict (``qa.summarize``) plus ``clips`` (their global indices).
    """
    from hand2world.annotate.qa import summarize, write_report
    from hand2world.io import iter_frames, video_info

    paths = [videos] if isinstance(videos, (str, Path)) else list(videos)
    out = Path(out)
    results = []
    with ClipWriter(out) as writer:
        for path in paths:
            path = Path(path)
            info = video_info(path)
            total = info["frames"] if max_frames is None else min(info["frames"] or max_frames, max_frames)
            ann = annotate_frames(iter_frames(path, max_frames), info["fps"] or 30.0, config, K=K, total=total or None,
                                  mano_dir=mano_dir)
            t0 = time.perf_counter()
            ids = [writer.add(c) for c in tqdm(annotation_clips(ann, config, str(path)), desc="annotate: write",
                                                total=len(clip_starts(len(ann.frames), config.clip_frames)),
                                                unit="clip")]
            write_ms = _ms(t0)
            summary = summarize(ann)
            summary.update(video=str(path), clips=ids, write_ms=write_ms, config=asdict(config))
            if qa:
                summary = write_report(ann, summary, out / "qa" / path.name.split(".")[0])
            results.append(summary)
            log.info("annotate %s: %d frames -> %d clips; hand in %.1f%% of frames; reprojection median %.2f px",
                     path.name, len(ann.frames), len(ids), 100 * summary["detection_rate"],
                     summary["reprojection_px"]["median"])
    return results
