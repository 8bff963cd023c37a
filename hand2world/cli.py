"""`hand2world` command line: thin argument parsing over library functions.

Subcommands here: ``setup`` (build model assets), ``control`` (video -> side-by-side
conditioning MP4), ``bench`` (benchmarks). Subsystems register their own (``world``, ``train``,
``generate``, ``serve`` ...) through ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

# Before torch (and its OpenMP runtime) loads: idle OpenMP threads sleep instead of spinning.
# On a shared or oversubscribed CPU the default spin-wait made a 2-thread stream step ~40x more
# expensive (README, bench stream); an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rich.logging import RichHandler  # noqa: E402

log = logging.getLogger("hand2world")

# Subsystems add their subcommands here: each module has ``register(sub, bench)`` that adds its
# parsers to ``sub`` (top level) with ``set_defaults(func=...)`` and its benchmarks to ``bench``
# through ``hand2world.benchmark.add_benchmark``; heavy dependencies are imported lazily.
COMMAND_MODULES: tuple[str, ...] = ("hand2world.server.cli", "hand2world.train.cli", "hand2world.world.cli",
                                     "hand2world.annotate.cli", "hand2world.eval.cli",
                                     "hand2world.distill.cli", "hand2world.stream.cli", "hand2world.generate",
                                     "hand2world.export")


def _cmd_setup(args: argparse.Namespace) -> int:
    from hand2world.hands import build_open_hand
    from hand2world.paths import asset_path
    from hand2world.tracking import build_hand_landmarker_bundle

    build_hand_landmarker_bundle(force=args.force)
    from hand2world.hands.skeleton import SIDES

    for side in SIDES:
        path = asset_path(f"open_hand_{side}.npz", must_exist=False)
        if args.force or not path.is_file():
            build_open_hand(side)
        log.info("open hand model (%s): %s", side, path)
    for name in ("cup.mp4", "handSrc.jpg"):
        path = asset_path(name, must_exist=False)
        if not path.is_file():
            log.warning("real test footage %s missing at %s (scripts/setup.sh fetches it)", name, path)
    return 0


def _cmd_control(args: argparse.Namespace) -> int:
    import numpy as np

    from hand2world.control_video import run_control_video
    from hand2world.paths import asset_path, outputs_dir

    video = Path(args.video) if args.video else asset_path("cup.mp4")
    out = Path(args.out) if args.out else outputs_dir() / f"{video.stem}_control.mp4"
    c2w = np.load(args.c2w) if args.c2w else None
    if c2w is not None and (c2w.ndim != 3 or c2w.shape[1:] != (4, 4)):
        log.error("--c2w must hold an array [T, 4, 4], got %s", c2w.shape)
        return 2
    stats = run_control_video(video, out, panel_height=args.height, fov_deg=args.fov, mirrored=args.mirrored,
                              c2w=c2w, max_frames=args.max_frames, kind=args.kind, mano_dir=args.mano_dir)
    print(json.dumps({k: stats[k] for k in ("out", "frames", "detection_rate", "fps", "median_ms")}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``hand2world`` argument parser."""
    parser = argparse.ArgumentParser(prog="hand2world", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="build model assets (MediaPipe bundle, open hand models); idempotent")
    p.add_argument("--force", action="store_true", help="rebuild even when present")
    p.set_defaults(func=_cmd_setup)

    p = sub.add_parser("control", help="video -> side-by-side MP4: input | landmarks | control | Plücker rays")
    p.add_argument("--video", help="input video (default: the real cup video fetched at set-up)")
    p.add_argument("--out", help="output MP4 (default: outputs/<video>_control.mp4); timings go to .json beside")
    p.add_argument("--height", type=int, default=256, help="panel height in pixels")
    p.add_argument("--fov", type=float, default=60.0, help="assumed horizontal field of view (degrees)")
    p.add_argument("--mirrored", action="store_true", help="input is a mirrored selfie view")
    p.add_argument("--c2w", help="optional .npy camera trajectory [T,4,4] (camera-to-world)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--kind", default="open", choices=["open", "mano"], help="hand model")
    p.add_argument("--mano-dir", default=None, help="folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (kind=mano)")
    p.set_defaults(func=_cmd_control)

    p = sub.add_parser("bench", help="benchmarks: medians and p95 as text + JSON")
    bench = p.add_subparsers(dest="bench", required=True)
    from hand2world.eval.bench import register_builtin

    register_builtin(bench)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hand2world`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)])
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
