"""`hand2world eval`: the evaluation command (argument parsing over ``hand2world.eval.evaluate.run_eval``)."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def _lengths(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "0", "none"):
        return ()
    vals = tuple(int(x) for x in text.split(",") if x.strip())
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--long lengths must be positive, got {text!r}")
    return vals


def _cmd_eval(args: argparse.Namespace) -> int:
    from hand2world.eval.adapters import ModelSpec, parse_model_arg
    from hand2world.eval.evaluate import EvalConfig, run_eval

    specs: list[ModelSpec] = []
    if args.checkpoint is None and not args.teacher and not args.model:
        args.checkpoint = "default"  # the shipped student, as serve and generate use
    if args.checkpoint:
        specs.append(ModelSpec("student", "student", args.checkpoint))
    if args.teacher:
        specs.append(ModelSpec("teacher", "teacher", args.teacher))
    specs += [parse_model_arg(m) for m in args.model or []]
    if not specs:
        log.warning("no model given (--checkpoint / --teacher / --model): evaluating the baseline only")
    cfg = EvalConfig(data=args.data, out=args.out, split=args.split or None, clips=args.clips, long=args.long,
                     long_data=args.long_data, long_clips=args.long_clips, teacher_steps=args.teacher_steps,
                     dilate=args.dilate, metric_weights=args.metric_weights, grid_clips=args.grid_clips,
                     progress=not args.no_progress, reference=args.reference, detect=not args.no_detect,
                     real_photo=not args.no_real_photo, real_frames=args.real_frames)
    result = run_eval(cfg, specs)
    summary = {name: {k: m["metrics"].get(k) for k in ("psnr", "ssim", "hand_psnr", "occluded_psnr", "bg_ssim",
                                                        "hands_found", "camera_err_deg", "flicker")}
               for name, m in result["models"].items()}
    print(json.dumps({"out": args.out, "clips": result["clips"], "models": summary,
                      "long": {k: {"segment_psnr": v["segment_psnr"], "collapsed": v["collapsed"]}
                               for k, v in (result.get("long") or {}).get("models", {}).items()},
                      "real_photo": {k: {"background_ssim": v["background_ssim"], "detection": v["detection"]}
                                     for k, v in (result.get("real_photo") or {}).items()}}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``hand2world eval``."""
    p = sub.add_parser("eval", help="evaluate students/teachers vs a repeat-scene baseline on held-out clips",
                       description="Metrics, tables, plots and an MP4 grid; definitions in docs/eval.md.")
    p.add_argument("--checkpoint", help="the student (StreamingGenerator folder or name), labelled 'student'; "
                   "default: the shipped weights/default when no model is given")
    p.add_argument("--teacher", help="a teacher checkpoint (TeacherSampler), labelled 'teacher'")
    p.add_argument("--model", action="append", metavar="NAME=[student:|teacher:]PATH",
                   help="more models by name (repeatable; ablations); kind detected from stream.json if not given")
    p.add_argument("--data", default="outputs/data/world_128_heldout", help="ClipDataset folder of test clips")
    p.add_argument("--split", default="test", help="split to evaluate ('' = all clips)")
    p.add_argument("--out", required=True, help="output folder (metrics.json, metrics.md, PNG plots, MP4 grids)")
    p.add_argument("--clips", type=int, default=None, help="at most this many test clips")
    p.add_argument("--long", type=_lengths, default=(81, 162, 324),
                   help="long-rollout lengths for students, comma-separated ('0' = none)")
    p.add_argument("--long-data", help="ClipDataset of long ground-truth clips (default: synthesize OUT/long_data)")
    p.add_argument("--long-clips", type=int, default=2, help="long clips to roll out")
    p.add_argument("--teacher-steps", type=int, default=20, help="Euler steps per teacher window")
    p.add_argument("--dilate", type=int, default=None, help="hand-mask dilation in px (default: size / 64)")
    p.add_argument("--metric-weights", help="folder with LPIPS/FVD network weights (docs/eval.md)")
    p.add_argument("--grid-clips", type=int, default=4, help="clips shown in grid.mp4")
    p.add_argument("--reference", metavar="AUTOENCODER",
                   help="the deterministic reference: a composite-guide-only autoencoder run or folder (its row "
                        "decodes the warped photo + control render with no latent)")
    p.add_argument("--no-detect", action="store_true", help="skip MediaPipe's hand detection on frames")
    p.add_argument("--no-real-photo", action="store_true",
                   help="skip the real-photo section (built-in scenes driven by the cup video's gestures)")
    p.add_argument("--real-frames", type=int, default=48, help="cup-video frames in the real-photo section")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)
