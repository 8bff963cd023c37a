"""`hand2world annotate ...` and `hand2world annotate-validate ...`; `hand2world bench annotate`.

Thin argument parsing over ``hand2world.annotate`` (heavy imports happen inside the commands).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _intrinsics(text: str | None):
    """``fx,fy,cx,cy`` (pixels of the input video) or a ``.npy``/``.txt`` file with a 3x3 K -> ``[3, 3]`` or None."""
    import numpy as np

    if not text:
        return None
    path = Path(text)
    if path.is_file():
        K = np.load(path) if path.suffix == ".npy" else np.loadtxt(path)
        K = np.asarray(K, np.float64).reshape(3, 3)
    else:
        try:
            fx, fy, cx, cy = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise ValueError(f"--intrinsics must be fx,fy,cx,cy or a file with a 3x3 K, got {text!r}") from exc
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    return K


def _config(args: argparse.Namespace):
    from hand2world.annotate.camera import OdometryConfig
    from hand2world.annotate.pipeline import AnnotateConfig

    odometry = OdometryConfig() if args.head_speed is None else OdometryConfig(head_speed=args.head_speed)
    return AnnotateConfig(size=args.size, clip_frames=args.clip_frames, fov_deg=args.fov, kind=args.kind,
                          mirrored=args.mirrored, split=args.split, odometry=odometry)


def _cmd_annotate(args: argparse.Namespace) -> int:
    from hand2world.annotate.pipeline import annotate_video

    results = annotate_video(args.videos, args.out, _config(args), K=_intrinsics(args.intrinsics),
                             max_frames=args.max_frames, mano_dir=args.mano_dir, qa=not args.no_qa)
    keys = ("video", "frames", "clips", "detection_rate", "jitter_px", "reprojection_px", "per_frame_fps",
            "trajectory_ms_per_frame", "files")
    print(json.dumps([{k: r.get(k) for k in keys} for r in results], indent=2, default=float))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from hand2world.annotate.validate import validate_synthetic

    result = validate_synthetic(args.out, clips=args.clips, frames=args.frames, size=args.size, seed=args.seed,
                                noise_px=args.noise_px, noise_m=args.noise_m, arms=args.arms,
                                true_masks=args.true_masks)
    print(json.dumps(result["summary"], indent=2))
    return 0


def _bench(args: argparse.Namespace) -> dict:
    from hand2world.annotate.pipeline import AnnotateConfig, annotate_video
    from hand2world.paths import asset_path

    video = Path(args.video) if args.video else asset_path("cup.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = annotate_video(video, tmp, AnnotateConfig(size=args.size), max_frames=args.max_frames, qa=False)[0]
        wall = time.perf_counter() - t0
    return {"video": str(video), "input_size": r["input_size"], "frames": r["frames"],
            "per_frame_fps": r["per_frame_fps"], "end_to_end_fps": r["frames"] / wall, "median_ms": r["median_ms"],
            "load_average_1min": os.getloadavg()[0],
            "trajectory_ms_per_frame": r["trajectory_ms_per_frame"],
            "trajectory_solve_ms": (r.get("odometry") or {}).get("bundle", {}).get("solve_ms"),
            "trajectory_bundle": (r.get("odometry") or {}).get("bundle"), "write_ms_total": r["write_ms"],
            "detection_rate": r["detection_rate"], "reprojection_px": r["reprojection_px"]}


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``annotate``, ``annotate-validate`` and ``bench annotate``."""
    from hand2world.benchmark import add_benchmark

    p = sub.add_parser("annotate", help="egocentric videos -> training clips (hands + camera) + QA report")
    p.add_argument("videos", nargs="+", help="input videos (anything PyAV decodes, also .mp4.gz)")
    p.add_argument("--out", required=True, help="clip dataset folder (appended to); QA under OUT/qa/<video>/")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy in input pixels, or a .npy/.txt 3x3 K (default: --fov)")
    p.add_argument("--fov", type=float, default=60.0, help="horizontal field of view (deg) without --intrinsics")
    p.add_argument("--size", type=int, default=256, help="short side of the written clips (pixels)")
    p.add_argument("--clip-frames", type=int, default=33, help="frames per clip")
    p.add_argument("--kind", default="open", choices=["open", "mano", "auto"], help="hand model (auto: MANO if found)")
    p.add_argument("--mano-dir", default=None, help="folder with MANO_RIGHT.pkl / MANO_LEFT.pkl")
    p.add_argument("--mirrored", action="store_true", help="frames are selfie-mirrored")
    p.add_argument("--split", default="train", help="split label written to every clip")
    p.add_argument("--max-frames", type=int, default=None, help="stop each video after N frames")
    p.add_argument("--no-qa", action="store_true", help="skip the QA report, plot and side-by-side MP4")
    p.add_argument("--head-speed", type=float, default=None,
                   help="camera motion prior: head speed in scene depths per second (default 0.08, tuned on the "
                        "synthetic world's gentle head motion; raise it for footage that walks or turns fast, "
                        "0 switches the prior off)")
    p.set_defaults(func=_cmd_annotate)

    p = sub.add_parser("annotate-validate", help="validate annotation against synthetic-world ground truth")
    p.add_argument("--out", required=True, help="folder for the synthetic clips and validation.json")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=384, help="render size (MediaPipe needs hands larger than at 128)")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--noise-px", type=float, default=1.0, help="fallback: 2-D landmark noise (pixels)")
    p.add_argument("--noise-m", type=float, default=0.003, help="fallback: 3-D landmark noise (metres)")
    p.add_argument("--arms", action="store_true", help="the synthetic world draws forearms on its hands")
    p.add_argument("--true-masks", action="store_true",
                   help="also solve each head-motion clip's camera with the hands masked from the ground truth "
                        "(the odometry's own accuracy, apart from the hands MediaPipe misses)")
    p.set_defaults(func=_cmd_validate)

    def configure(q: argparse.ArgumentParser) -> None:
        q.add_argument("--video", default=None, help="input video (default: the real cup video, 640x480)")
        q.add_argument("--size", type=int, default=256, help="clip short side")
        q.add_argument("--max-frames", type=int, default=None)

    add_benchmark(bench, "annotate", "annotation pipeline on a video (per-frame stages; trajectory separately)",
                  _bench, configure, threads=1)
