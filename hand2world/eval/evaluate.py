"""`hand2world eval`: students, teachers, the warped photo and a deterministic reference on held-out synthetic
clips, and a real-photo section.

Every model sees the same thing: a test clip's scene photo (its first camera's view without hands;
frame 0 for clips without one), its control renders, ``c2w`` and ``K``; it returns ``T`` frames,
frame 0 being the scene. Metrics are computed on the
generated frames ``1 .. T-1`` against the true ones (``hand2world.eval.metrics``; definitions in
docs/eval.md).

Layout: the models behind one interface are ``adapters``, the scores ``scores``, the written
outputs ``report``; this module is the driver (``run_eval``: score the models, run the long
rollouts, write the outputs).

Design choices:
- Every evaluation runs the baselines (``RepeatScene``, ``WarpedScene``: the warped photo, the
  reference of the floors) and the references (``FlatHandOracle``; ``AutoencoderOracle`` through the
  first evaluated model's autoencoder: the headroom of the hand floor and of any latent model)
  beside the given models; ``--reference`` adds the deterministic row (``GuideOnlyReference``).
- Hand detection (``hands_found``): MediaPipe on the frames with a visible true hand, for the true
  frames (the ``ground truth`` row) and each generated model (not the baselines and oracles).
- The real-photo section (``real_photo``) drives the built-in scene photos with a real gesture video. Many students and
  teachers can be compared in one table (``--model name=path``; ablations).
- Long rollouts (students and the baseline) run once to the longest length asked; a causal
  student's first ``L`` frames are its ``L``-frame rollout, so every length is a prefix of it.
  Their ground truth is a long synthetic clip (``--long-data``, else synthesized into
  ``OUT/long_data`` with seed 99, split ``test``).
- Camera error's noise floor: the same estimator on the true frames, reported as the
  ``ground truth`` row.
- Output: ``metrics.json``, ``metrics.md``, ``psnr_frames.png``, ``long_rollout.png``, ``grid.mp4``
  (ground truth | control | each teacher | each student), ``long_grid.mp4``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hand2world.eval import metrics as M
from hand2world.eval.adapters import (
    AutoencoderOracle,
    FlatHandOracle,
    GuideOnlyReference,
    ModelSpec,
    RepeatScene,
    VideoModel,
    WarpedScene,
    load_model,
)
from hand2world.eval.networks import fvd, load_fvd_detector, load_lpips, metric_weights_dir
from hand2world.eval.report import markdown_table, plot_curves, strip_curves, write_grid
from hand2world.eval.scores import (
    CLIP_KEYS,
    GT_NAME,
    aggregate,
    aggregate_long,
    camera_errors,
    clip_metrics,
    detection_metrics,
    long_metrics,
    paired_differences,
    prepare_clip,
)

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "evaluated_models", "long_dataset", "long_rollouts", "real_photos", "run_eval",
           "score_models"]

#: kinds whose generated frames MediaPipe judges (the baselines have no hands; the oracles read the truth)
DETECTED_KINDS = ("student", "teacher", "reference")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation run (the ``eval`` command's options)."""

    data: str
    out: str
    split: str | None = "test"
    clips: int | None = None
    long: tuple[int, ...] = (81, 162, 324)
    long_data: str | None = None
    long_clips: int = 2
    teacher_steps: int = 20
    dilate: int | None = None
    metric_weights: str | None = None
    grid_clips: int = 4
    progress: bool = True
    reference: str | None = None
    detect: bool = True
    real_photo: bool = True
    real_frames: int = 48


def evaluated_models(cfg: EvalConfig, specs: Sequence[ModelSpec], models: Sequence[VideoModel] | None = None
                     ) -> list[Any]:
    """The baselines, the references and the given models (``models``, then ``specs`` loaded), in table order;
    names unique, one resolution."""
    given: list[VideoModel] = [*(models or []), *(load_model(s, cfg.teacher_steps) for s in specs)]
    autoencoders = [m.autoencoder for m in given if getattr(m, "autoencoder", None) is not None]
    oracles = [FlatHandOracle(), *([AutoencoderOracle(autoencoders[0])] if autoencoders else [])]
    reference = [GuideOnlyReference(cfg.reference)] if cfg.reference else []
    loaded: list[Any] = [RepeatScene(), WarpedScene(), *oracles, *reference, *given]
    names = [m.name for m in loaded]
    if len(set(names)) != len(names) or GT_NAME in names:
        raise ValueError(f"model names must be unique and not {GT_NAME!r}: {names}")
    sizes = {m.size for m in loaded if m.size is not None}
    if len(sizes) > 1:
        raise ValueError(f"models of different resolutions in one evaluation: {sorted(sizes)}")
    return loaded


def score_models(cfg: EvalConfig, loaded: Sequence[Any], specs: Sequence[ModelSpec] = ()
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """Generate and score every model on the test clips.

    Returns the result dict (everything but long rollouts, outputs, pairs and time), the prepared clips
    and each model's generated videos (per clip).
    """
    from hand2world.data import ClipDataset

    ds = ClipDataset(cfg.data, keys=CLIP_KEYS, split=cfg.split)
    if len(ds) == 0:
        raise ValueError(f"no clips of split {cfg.split!r} in {cfg.data}")
    n = len(ds) if cfg.clips is None else min(cfg.clips, len(ds))
    sizes = {m.size for m in loaded if m.size is not None}
    size = next(iter(sizes)) if sizes else ds[0]["video"].shape[1]
    dilate = cfg.dilate if cfg.dilate is not None else max(1, round(size / 64))
    lpips_model, lpips_reason = load_lpips(cfg.metric_weights)
    fvd_detector, fvd_reason = load_fvd_detector(cfg.metric_weights)
    for what, reason in (("LPIPS", lpips_reason), ("FVD", fvd_reason)):
        if reason:
            log.warning("%s unavailable: %s (see docs/eval.md)", what, reason)

    clips = [prepare_clip(ds[i], size) for i in range(n)]
    per_model: dict[str, list[dict]] = {GT_NAME: []}
    videos: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    tracker = None
    if cfg.detect:
        from hand2world.tracking import HandTracker

        tracker = HandTracker(mode="image")
    for clip in tqdm(clips, desc="eval: noise floor", disable=not cfg.progress):
        hand = M.dilate_masks(clip["hand_mask"], dilate)
        per_model[GT_NAME].append(camera_errors(clip["video"], clip, hand))
        if tracker is not None:
            per_model[GT_NAME][-1].update(detection_metrics(clip["video"], clip, tracker))
    for model in loaded:
        per_model[model.name], videos[model.name] = [], []
        t0 = time.perf_counter()
        for i, clip in enumerate(tqdm(clips, desc=f"eval: {model.name}", disable=not cfg.progress)):
            frames = (model.frames(clip) if model.kind == "oracle" else
                      model.generate(clip["scene"], clip["control"], clip["c2w"], clip["K"], seed=i))
            videos[model.name].append(frames)
            per_model[model.name].append(clip_metrics(frames, clip, dilate, lpips_model))
            if tracker is not None and model.kind in DETECTED_KINDS:
                per_model[model.name][-1].update(detection_metrics(frames, clip, tracker))
        seconds[model.name] = time.perf_counter() - t0
    if tracker is not None:
        tracker.close()

    result: dict[str, Any] = {
        "data": str(cfg.data), "split": cfg.split, "clips": n, "frames": int(len(clips[0]["video"])), "size": size,
        "hand_dilate_px": dilate, "metric_weights": str(metric_weights_dir(cfg.metric_weights)),
        "lpips": "computed" if lpips_model is not None else f"unavailable ({lpips_reason})",
        "fvd": "computed" if fvd_detector is not None else f"unavailable ({fvd_reason})",
        "true_rotation_deg": aggregate(per_model[GT_NAME]).get("true_rotation_deg"),
        "models": {GT_NAME: {"kind": "reference", "metrics": aggregate(per_model[GT_NAME]), "per_clip":
                             per_model[GT_NAME]}},
    }
    real = [c["video"] for c in clips]
    for model in loaded:
        entry: dict[str, Any] = {"kind": model.kind, "path": getattr(model, "path", None),
                                 "metrics": aggregate(per_model[model.name]),
                                 "seconds_per_frame": seconds[model.name] / max(sum(len(v) - 1 for v in real), 1),
                                 "per_clip": per_model[model.name]}
        entry["fvd"] = (fvd(fvd_detector, videos[model.name], real) if fvd_detector is not None else "unavailable")
        if isinstance(entry["fvd"], dict):
            entry["fvd_windows"] = entry["fvd"]["windows"]
            entry["fvd"] = entry["fvd"]["fvd"]
        result["models"][model.name] = entry
    spec_paths = {s.name: s.path for s in specs}
    for name, entry in result["models"].items():
        if name in spec_paths:
            entry["path"] = spec_paths[name]
    return result, clips, videos


def long_dataset(cfg: EvalConfig, size: int) -> Any:
    """The long ground-truth clips: ``cfg.long_data``, else synthesized into ``OUT/long_data`` (resumable)."""
    from hand2world.data import ClipDataset

    frames = max(cfg.long) + 1
    root = Path(cfg.long_data) if cfg.long_data else Path(cfg.out) / "long_data"
    if not (root / "index.json").is_file() or ClipDataset(root).num_clips < cfg.long_clips:
        from hand2world.world.synth import synthesize

        log.info("synthesizing %d long test clips (%d frames, %d px, seed 99) in %s", cfg.long_clips, frames, size,
                 root)
        synthesize(root, clips=cfg.long_clips, frames=frames, size=size, seed=99, split="test",
                   progress=cfg.progress)
    ds = ClipDataset(root, keys=CLIP_KEYS)
    first = ds[0]["video"]
    if len(first) < frames:
        raise ValueError(f"long clips in {root} have {len(first)} frames; --long needs {frames}")
    return ds


def long_rollouts(cfg: EvalConfig, loaded: Sequence[Any], size: int
                  ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]] | None:
    """Long rollouts of the students and the baselines to ``max(cfg.long)`` frames, scored per length.

    Returns ``(long result, prepared long clips, each model's first rollout)``, or None when no student
    is evaluated or no length is asked.
    """
    lengths = tuple(sorted(set(cfg.long)))
    long_models = [m for m in loaded if m.kind in ("student", "baseline", "reference")]
    if not lengths or not any(m.kind == "student" for m in long_models):
        return None
    long_ds = long_dataset(cfg, size)
    total = max(lengths) + 1
    long_clips = [prepare_clip(long_ds[i], size) for i in range(min(cfg.long_clips, len(long_ds)))]
    long_res: dict[str, Any] = {"data": str(long_ds.root), "lengths": list(lengths), "models": {}}
    long_videos: dict[str, np.ndarray] = {}
    for model in long_models:
        per = []
        for i, clip in enumerate(tqdm(long_clips, desc=f"long rollout: {model.name}", disable=not cfg.progress)):
            c = {k: (v[:total] if k not in ("K", "scene") else v) for k, v in clip.items()}
            frames = model.generate(c["scene"], c["control"], c["c2w"], c["K"], seed=1000 + i)
            if i == 0:
                long_videos[model.name] = frames
            per.append(long_metrics(frames, c["video"], lengths))
        long_res["models"][model.name] = aggregate_long(per, lengths)
    return long_res, long_clips, long_videos


def real_photos(cfg: EvalConfig, loaded: Sequence[Any], out: Path) -> dict[str, Any] | None:
    """The real-photo section (``eval.real_photo``): every built-in scene driven by the cup video's gestures, for the
    generated models and the deterministic reference; None when off, when no such model is evaluated, or when
    the cup video is not set up."""
    models = [m for m in loaded if m.kind in DETECTED_KINDS]
    if not cfg.real_photo or not models:
        return None
    from hand2world.eval.real_photo import builtin_scenes, cup_gestures, real_photo_section

    try:
        gestures = cup_gestures(cfg.real_frames)
    except FileNotFoundError as exc:
        log.warning("real-photo section skipped: %s", exc)
        return None
    return real_photo_section(models, builtin_scenes(), gestures, out)


def _write_scored(out: Path, cfg: EvalConfig, loaded: Sequence[Any], result: dict[str, Any],
                  clips: list[dict[str, Any]], videos: dict[str, list[np.ndarray]]) -> dict[str, str]:
    """``psnr_frames.png`` and ``grid.mp4`` of the scored clips; returns their entries of ``outputs``."""
    per_model = {name: m["per_clip"] for name, m in result["models"].items()}
    curves = {m.name: np.mean([c["psnr_frames"] for c in per_model[m.name]], axis=0).tolist() for m in loaded}
    plot_curves(out / "psnr_frames.png", curves, f"PSNR per generated frame (mean of {result['clips']} clips)",
                "frame")
    shown = [m for m in loaded if m.kind in ("teacher", "student")]
    shown.sort(key=lambda m: m.kind != "teacher")
    rows = [{"ground truth": c["video"], "control": c["control"], **{m.name: videos[m.name][i] for m in shown}}
            for i, c in enumerate(clips[:cfg.grid_clips])]
    write_grid(out / "grid.mp4", rows)
    return {"json": "metrics.json", "markdown": "metrics.md", "psnr_plot": "psnr_frames.png", "grid": "grid.mp4"}


def _write_long(out: Path, loaded: Sequence[Any], long_res: dict[str, Any], long_clips: list[dict[str, Any]],
                long_videos: dict[str, np.ndarray]) -> dict[str, str]:
    """``long_rollout.png`` and ``long_grid.mp4`` (the students' first long rollout); their ``outputs`` entries."""
    lengths = long_res["lengths"]
    total = max(lengths) + 1
    plot_curves(out / "long_rollout.png", {k: v["psnr_frames"] for k, v in long_res["models"].items()},
                f"Long rollout: PSNR per frame (mean of {len(long_clips)} clips)", "frame", segments=min(lengths))
    c0 = long_clips[0]
    baselines = {m.name for m in loaded if m.kind == "baseline"}
    write_grid(out / "long_grid.mp4", [{"ground truth": c0["video"][:total], "control": c0["control"][:total],
                                        **{k: v for k, v in long_videos.items() if k not in baselines}}], fps=16.0)
    return {"long_plot": "long_rollout.png", "long_grid": "long_grid.mp4"}


def run_eval(cfg: EvalConfig, specs: Sequence[ModelSpec], models: Sequence[VideoModel] | None = None) -> dict:
    """Evaluate ``specs`` (loaded here) and/or ready ``models`` plus the baselines; write outputs to ``cfg.out``.

    Score the models on the test clips, run the long rollouts, write the outputs. Returns the result dict
    that is also written to ``metrics.json``.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    loaded = evaluated_models(cfg, specs, models)
    result, clips, videos = score_models(cfg, loaded, specs)
    outputs = _write_scored(out, cfg, loaded, result, clips, videos)
    long = long_rollouts(cfg, loaded, result["size"])
    if long is not None:
        result["long"] = long[0]
        outputs.update(_write_long(out, loaded, *long))
    elif cfg.long:
        result["long"] = None
        log.info("long rollouts skipped: no student given")
    real = real_photos(cfg, loaded, out)
    if real is not None:
        result["real_photo"] = real
        outputs.update({f"real_photo: {k}": Path(v["strip"]).name for k, v in real.items()})
    result["outputs"] = outputs
    result["paired"] = paired_differences(result)
    result["seconds"] = time.perf_counter() - t_start
    result = strip_curves(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    (out / "metrics.md").write_text(markdown_table(result))
    log.info("eval: wrote %s", ", ".join(str(out / v) for v in outputs.values()))
    return result
