"""`hand2world world synth|preview|realism` and `hand2world bench world` (registered through ``cli.COMMAND_MODULES``).

Design choices: argument parsing only; the work is ``synth.synthesize``,
``preview.write_contact_sheet`` and ``realism.realism``. The benchmark runs a real ``synthesize`` into a temporary
folder (writing included) and extrapolates to the floor's 1,000 clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["register"]


def _cmd_synth(args: argparse.Namespace) -> int:
    from hand2world.world.synth import synthesize

    result = synthesize(args.out, args.clips, args.frames, args.size, args.seed, args.workers, fps=args.fps,
                        split=args.split, shard_size=args.shard_size, arms=args.arms, photos=args.photos)
    print(json.dumps({k: result[k] for k in ("made", "skipped", "seconds")} | {
        "num_clips": result["index"]["num_clips"], "out": str(args.out)}, indent=2))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from hand2world.paths import outputs_dir
    from hand2world.world.preview import write_contact_sheet

    out = Path(args.out) if args.out else outputs_dir() / "world_sheet.png"
    write_contact_sheet(args.root, out, clips=args.clips, frames_per_clip=args.frames)
    print(out)
    return 0


def _cmd_realism(args: argparse.Namespace) -> int:
    from hand2world.world.realism import realism

    sizes = tuple(int(s) for s in args.sizes.split(","))
    result = realism(args.data, args.clips, sizes, min_fraction=args.min_fraction)
    print(json.dumps(result, indent=2))
    return 0


def _bench_world(args: argparse.Namespace) -> dict:
    from hand2world.world.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        result = synthesize(tmp, args.clips, args.frames, args.size, seed=args.seed, workers=args.workers,
                            shard_size=args.shard_size, progress=False)
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("shard-*.zip")) / 2**20
    sec = result["seconds"]
    frames = args.clips * args.frames
    cpu = sum(result["timings"].values())
    return {
        "what": f"world synth: {args.clips} clips x {args.frames} frames at {args.size}x{args.size}, "
                f"{args.workers} workers, writing included",
        "seconds": round(sec, 2), "clips_per_s": round(args.clips / sec, 3), "frames_per_s": round(frames / sec, 1),
        "extrapolated_1000_clips_min": round(1000 / (args.clips / sec) / 60, 2),
        "stage_share": {k: round(v / cpu, 3) for k, v in sorted(result["timings"].items())},
        "ms_per_frame_per_worker": {k: round(1000 * v / frames, 2) for k, v in sorted(result["timings"].items())},
        "mb_per_clip": round(size_mb / args.clips, 3),
    }


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``world synth``, ``world preview`` and ``bench world``."""
    from hand2world.benchmark import add_benchmark

    p = sub.add_parser("world", help="synthetic egocentric tabletop world: make clips, preview them")
    world = p.add_subparsers(dest="world", required=True)
    s = world.add_parser("synth", help="write synthetic clips (resumable, deterministic by seed)")
    s.add_argument("--clips", type=int, required=True)
    s.add_argument("--frames", type=int, default=33)
    s.add_argument("--size", type=int, default=128, help="square frame size in pixels")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="dataset folder")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--fps", type=float, default=16.0)
    s.add_argument("--split", default="train", help="split label written to every clip")
    s.add_argument("--shard-size", type=int, default=50, help="clips per shard file")
    s.add_argument("--arms", action=argparse.BooleanOptionalAction, default=True,
                   help="draw a forearm on each hand (default: on)")
    s.add_argument("--photos", action=argparse.BooleanOptionalAction, default=True,
                   help="real photographs as table, floor, wall and label textures (default: on)")
    s.set_defaults(func=_cmd_synth)
    v = world.add_parser("preview", help="contact sheet: RGB | control | masks | depth for a few clips")
    v.add_argument("root", help="dataset folder")
    v.add_argument("--out", help="image file (default: outputs/world_sheet.png)")
    v.add_argument("--clips", type=int, default=6)
    v.add_argument("--frames", type=int, default=3, help="frames shown per clip")
    v.set_defaults(func=_cmd_preview)
    r = world.add_parser("realism", help="MediaPipe's hand detection rate on the dataset's own frames, per size")
    r.add_argument("--data", required=True, help="dataset folder")
    r.add_argument("--clips", type=int, help="first N clips (default: all)")
    r.add_argument("--sizes", default="256,128", help="comma-separated resolutions to judge at (px)")
    r.add_argument("--min-fraction", type=float, default=0.005,
                   help="a frame counts when its visible hand covers this share of it")
    r.set_defaults(func=_cmd_realism)

    def configure(b: argparse.ArgumentParser) -> None:
        b.add_argument("--clips", type=int, default=100)
        b.add_argument("--frames", type=int, default=33)
        b.add_argument("--size", type=int, default=128)
        b.add_argument("--workers", type=int, default=2)
        b.add_argument("--seed", type=int, default=0)
        b.add_argument("--shard-size", type=int, default=10)

    add_benchmark(bench, "world", "synthetic world clip throughput (extrapolated to 1,000 clips)", _bench_world,
                  configure)
