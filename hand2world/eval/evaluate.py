"""`hand2world eval`: students, teachers and a repeat-the-scene baseline on held-out synthetic clips.

Every model sees the same thing: a test clip's first true frame (the scene), its control renders,
``c2w`` and ``K``; it returns ``T`` frames, frame 0 being the scene. Metrics are computed on the
generated frames ``1 .. T-1`` against the true ones (``hand2world.eval.metrics``; definitions in
docs/eval.md).

Design choices:
- A model is anything with ``name``, ``kind``, ``size`` and ``generate(scene, control, c2w, K, seed)
  -> [T, S, S, 3]``: ``RepeatScene`` (the baseline of the floors, always evaluated), ``WarpedScene``
  (the scene warped by the camera through a 0.5 m plane: the geometric prior alone, always evaluated), ``TeacherModel``
  (``TeacherSampler``, chained windows) and ``StudentModel`` (``StreamingGenerator``: ``start`` with
  the scene, then ``step`` over the remaining frames in chunks of its block). Many students and
  teachers can be compared in one table (``--model name=path``; ablations).
- Two references read the ground truth (kind ``oracle``, ``frames(clip)``): ``FlatHandOracle`` (true
  visible hands in flat true colour on the warped scene) and ``AutoencoderOracle`` (the true frames
  through the first evaluated model's autoencoder): the headroom of the hand floor and of any latent model.
- Clips at another resolution than a model's are centre-cropped/resized to it (``K`` adjusted,
  masks nearest-neighbour), as ``generate`` does.
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
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from hand2world.eval import metrics as M
from hand2world.eval.networks import fvd, load_fvd_detector, load_lpips, metric_weights_dir
from hand2world.geometry import rotation_angle_deg

log = logging.getLogger(__name__)

__all__ = ["AutoencoderOracle", "EvalConfig", "FlatHandOracle", "ModelSpec", "RepeatScene", "StudentModel",
           "TeacherModel", "WarpedScene", "detect_kind", "load_model", "paired_differences", "parse_model_arg",
           "run_eval"]

GT_NAME = "ground truth"
CLIP_KEYS = ("video", "control", "K", "c2w", "hand_mask", "visible_mask")


class VideoModel(Protocol):
    """What the evaluation needs of a model."""

    name: str
    kind: str
    size: int | None

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: table name, ``kind`` (``student`` | ``teacher``) and checkpoint path or name."""

    name: str
    kind: str
    path: str


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


class RepeatScene:
    """Baseline: every frame is the scene frame (no hands, no camera motion)."""

    name, kind, size = "repeat scene", "baseline", None

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        return np.repeat(scene[None], len(control), axis=0)


class WarpedScene:
    """Baseline: the scene frame warped into each frame's camera through a fronto-parallel plane at ``depth``
    (``warp_scene_latent`` on pixels) — the geometric prior the ``tiny`` preset conditions on, alone (no hands,
    no parallax beyond the plane)."""

    kind, size = "baseline", None

    def __init__(self, depth: float = 0.5) -> None:
        self.depth = depth
        self.name = f"warped scene ({depth:g} m plane)"

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        import torch

        from hand2world.geometry import relative_c2w
        from hand2world.models import warp_scene_latent

        img = torch.from_numpy(np.ascontiguousarray(scene)).permute(2, 0, 1)[None].float()
        rel = relative_c2w(torch.from_numpy(np.asarray(c2w, np.float32)))[None]
        out = warp_scene_latent(img, torch.from_numpy(np.asarray(K, np.float32)), rel, self.depth, 1)
        return out[0].permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class FlatHandOracle:
    """Reference that reads the ground truth: the warped scene (``WarpedScene``) with each frame's visible hand
    pixels (true ``visible_mask``) painted that frame's true mean hand colour. It is what a model scores that
    puts every hand exactly where it is seen, in exactly the right average colour, but draws no shading: the
    headroom of the hand-region floor for models that only get silhouette and colour right."""

    name, kind, size = "oracle: flat true-colour hands", "oracle", None

    def frames(self, clip: dict[str, Any]) -> np.ndarray:
        """``[T, S, S, 3]`` uint8 for a prepared clip (``video``, ``visible_mask``, ``c2w``, ``K``)."""
        video, vis = clip["video"], clip["visible_mask"]
        out = WarpedScene().generate(video[0], video, clip["c2w"], clip["K"]).copy()
        for t in range(len(video)):
            if vis[t].any():
                out[t][vis[t]] = video[t][vis[t]].reshape(-1, 3).mean(0).round().astype(np.uint8)
        out[0] = video[0]
        return out


class AutoencoderOracle:
    """Reference that reads the ground truth: every true frame through the evaluated model's autoencoder
    (encode, decode). No latent model can score above it, so it separates what the autoencoder loses
    from what the diffusion model gets wrong (e.g. whether hands are lost in the latents or never drawn)."""

    name, kind, size = "oracle: autoencoder round trip", "oracle", None

    def __init__(self, autoencoder: Any) -> None:
        self.ae = autoencoder

    def frames(self, clip: dict[str, Any]) -> np.ndarray:
        """``[T, S, S, 3]`` uint8: the prepared clip's ``video`` encoded and decoded (frame 0 kept as is)."""
        import torch

        video = clip["video"]
        w = next(self.ae.parameters())
        x = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        x = x.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            y = self.ae.decode(self.ae.encode(x))[0]  # [3, T, H, W]
        out = y.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
        out[0] = video[0]
        return out


class TeacherModel:
    """The bidirectional teacher through ``TeacherSampler`` (chained windows, ``steps`` Euler steps)."""

    kind = "teacher"

    def __init__(self, name: str, path: str, steps: int = 20) -> None:
        from hand2world.generate import TeacherSampler

        self.name, self.steps = name, steps
        self.sampler = TeacherSampler.from_checkpoint(path)
        self.size = self.sampler.size
        self.autoencoder = self.sampler.ae

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        return self.sampler.generate(scene, control, c2w, K, steps=self.steps, seed=seed)


class StudentModel:
    """A causal student through ``StreamingGenerator``: ``start(scene, K, scene_c2w=c2w[0])``, then ``step`` per
    block with the clip's absolute ``c2w`` (the generator makes them relative to the scene pose)."""

    kind = "student"

    def __init__(self, name: str, path: str) -> None:
        from hand2world.stream import StreamingGenerator

        self.name = name
        self.gen = StreamingGenerator.from_pretrained(path)
        if self.gen.height != self.gen.width:
            raise ValueError(f"evaluation uses square clips; {path} streams {self.gen.height}x{self.gen.width}")
        self.size = int(self.gen.height)
        self.chunk = int(self.gen.config.frames_per_block)  # per-frame autoencoder: latent frames = frames
        self.autoencoder = self.gen.ae

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        self.gen.seed = seed  # the stream's noise is re-seeded from this at start
        self.gen.start(scene, K, scene_c2w=c2w[0])
        out = [scene[None]]
        for s in range(1, len(control), self.chunk):
            out.append(np.asarray(self.gen.step(control[s:s + self.chunk], c2w[s:s + self.chunk])))
        return np.concatenate(out)[: len(control)]


def detect_kind(path: str) -> str:
    """``student`` when the checkpoint folder has a ``stream.json`` (a streaming student), else ``teacher``."""
    from hand2world.paths import checkpoint_path

    folder = checkpoint_path(path)
    return "student" if (folder / "stream.json").is_file() else "teacher"


def parse_model_arg(arg: str) -> ModelSpec:
    """``NAME=PATH``, ``NAME=student:PATH`` or ``NAME=teacher:PATH`` -> ``ModelSpec`` (kind detected if not given)."""
    if "=" not in arg:
        raise ValueError(f"--model expects NAME=PATH (optionally NAME=student:PATH / teacher:PATH), got {arg!r}")
    name, rest = arg.split("=", 1)
    kind = None
    for k in ("student", "teacher"):
        if rest.startswith(k + ":"):
            kind, rest = k, rest[len(k) + 1:]
    if not name or not rest:
        raise ValueError(f"--model {arg!r}: empty name or path")
    return ModelSpec(name, kind or detect_kind(rest), rest)


def load_model(spec: ModelSpec, teacher_steps: int = 20) -> VideoModel:
    """Build the evaluation wrapper of a ``ModelSpec``."""
    if spec.kind == "teacher":
        return TeacherModel(spec.name, spec.path, teacher_steps)
    if spec.kind == "student":
        return StudentModel(spec.name, spec.path)
    raise ValueError(f"unknown model kind {spec.kind!r}")


# ----------------------------------------------------------------------------------------------- clips


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    t, h, w = masks.shape
    if (h, w) == (size, size):
        return masks
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.stack([cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
                     [y0:y0 + size, x0:x0 + size] for m in masks]) > 0


def prepare_clip(clip: dict[str, Any], size: int | None) -> dict[str, Any]:
    """Clip arrays at ``size`` x ``size`` (unchanged when None or equal)."""
    from hand2world.io import fit_square

    out = {k: clip[k] for k in CLIP_KEYS}
    out["c2w"] = np.asarray(out["c2w"], np.float32)
    out["K"] = np.asarray(out["K"], np.float32)
    if size is None or clip["video"].shape[1:3] == (size, size):
        return out
    out["video"], K = fit_square(clip["video"], size, out["K"])
    out["control"] = fit_square(clip["control"], size, out["K"])[0]
    out["K"] = K
    out["hand_mask"] = _resize_masks(clip["hand_mask"], size)
    out["visible_mask"] = _resize_masks(clip["visible_mask"], size)
    return out


# ----------------------------------------------------------------------------------------------- per clip


def _cap(x: float) -> float:
    return float(min(x, M.PSNR_CAP))


def camera_errors(frames: np.ndarray, clip: dict[str, Any], mask: np.ndarray, max_pairs: int = 16) -> dict:
    """Rotation error (°) of pairs (0, i) estimated on ``frames`` vs the clip's ``c2w``.

    Pairs use up to ``max_pairs`` frames ``i`` evenly spread over ``1 .. T-1``. A failed estimate
    counts as the identity (error = the true rotation's angle).
    """
    t = len(frames)
    idx = np.unique(np.linspace(1, t - 1, min(max_pairs, t - 1)).round().astype(int)) if t > 1 else []
    errs, fails, true, ok = [], 0, [], []
    for i in idx:
        est = M.estimate_rotation(frames[0], frames[i], clip["K"], mask[0], mask[i])
        R_gt = M.gt_relative_rotation(clip["c2w"][0], clip["c2w"][i])
        errs.append(rotation_angle_deg(est.R @ R_gt.T))
        true.append(rotation_angle_deg(R_gt))
        fails += not est.ok
        if est.ok:
            ok.append(errs[-1])
    n = len(errs)
    return {"camera_err_deg": float(np.mean(errs)) if n else None,
            "camera_fail_rate": fails / n if n else None,
            "camera_err_ok_deg": float(np.mean(ok)) if ok else None,
            "true_rotation_deg": float(np.mean(true)) if n else None}


def clip_metrics(frames: np.ndarray, clip: dict[str, Any], dilate: int, lpips_model: Any = None) -> dict:
    """All per-clip metrics of generated ``frames [T, S, S, 3]`` (frame 0 = scene) against ``clip``.

    Returns a dict with scalars (``psnr``, ``ssim``, ``hand_psnr``, ``occluded_psnr``,
    ``occluded_pixels``, ``flicker``, ``camera_err_deg``, ``camera_fail_rate``, ``lpips``) and the
    per-frame PSNR curve ``psnr_frames`` (frames 1..T-1).
    """
    gt, gen = clip["video"], np.asarray(frames)
    if gen.shape != gt.shape:
        raise ValueError(f"generated frames {gen.shape} vs ground truth {gt.shape}")
    hand = M.dilate_masks(clip["hand_mask"], dilate)
    occluded = clip["hand_mask"] & ~clip["visible_mask"]
    p = M.psnr_frames(gen[1:], gt[1:])
    out: dict[str, Any] = {
        "psnr": float(np.mean(np.minimum(p, M.PSNR_CAP))),
        "ssim": float(np.mean(M.ssim_frames(gen[1:], gt[1:]))),
        "hand_psnr": M.region_psnr(gen[1:], gt[1:], hand[1:]),
        "occluded_psnr": M.region_psnr(gen[1:], gt[1:], occluded[1:]),
        "occluded_pixels": int(occluded[1:].sum()),
        "flicker": M.flicker(gen, gt, hand),
        **camera_errors(gen, clip, hand),
        "psnr_frames": [_cap(x) for x in p],
    }
    for key in ("hand_psnr", "occluded_psnr"):
        if out[key] is not None:
            out[key] = _cap(out[key])
    if lpips_model is not None:
        out["lpips"] = float(lpips_model.frames(gen[1:], gt[1:]).mean())
    return out


SCALARS = ("psnr", "ssim", "hand_psnr", "occluded_psnr", "camera_err_deg", "camera_fail_rate", "camera_err_ok_deg",
           "flicker", "lpips")


def aggregate(per_clip: list[dict]) -> dict:
    """Mean over clips of each scalar (clips where it is None are left out; ``n_<key>`` counts the rest)."""
    out: dict[str, Any] = {}
    for key in SCALARS + ("true_rotation_deg",):
        vals = [c[key] for c in per_clip if c.get(key) is not None]
        if any(key in c for c in per_clip):
            out[key] = float(np.mean(vals)) if vals else None
            out[f"n_{key}"] = len(vals)
    return out


# ----------------------------------------------------------------------------------------------- long rollouts


def long_metrics(frames: np.ndarray, gt: np.ndarray, lengths: Sequence[int]) -> dict:
    """Long-rollout metrics of ``frames`` (frame 0 = scene) against ``gt``, both ``[1 + max(lengths), ...]``.

    Segments are ``seg = min(lengths)`` generated frames long (1-81, 82-162, ...). Returns per-frame
    PSNR, per-segment mean PSNR and frame statistics (generated and true), mean PSNR up to each
    length, and the collapse indicator (see docs/eval.md).
    """
    seg = min(lengths)
    total = max(lengths)
    p = np.minimum(M.psnr_frames(frames[1:total + 1], gt[1:total + 1]), M.PSNR_CAP)
    segments = []
    for s in range(0, total, seg):
        g, t = frames[1 + s:1 + s + seg], gt[1 + s:1 + s + seg]
        sg, st = M.frame_stats(g), M.frame_stats(t)
        segments.append({"frames": [s + 1, s + len(g)], "psnr": float(p[s:s + seg].mean()), "stats": sg,
                         "gt_stats": st,
                         "contrast_ratio": sg["std"] / max(st["std"], 1e-6),
                         "sharpness_ratio": sg["sharpness"] / max(st["sharpness"], 1e-6)})
    first, last = segments[0], segments[-1]
    drop = first["psnr"] - last["psnr"]
    contrast_drift = last["contrast_ratio"] / max(first["contrast_ratio"], 1e-6)
    sharp_drift = last["sharpness_ratio"] / max(first["sharpness_ratio"], 1e-6)
    collapsed = bool(drop > 3.0 or not 0.5 <= contrast_drift <= 2.0 or not 0.5 <= sharp_drift <= 2.0)
    return {"psnr_frames": [float(x) for x in p], "segments": segments,
            "psnr_by_length": {str(n): float(p[:n].mean()) for n in lengths},
            "psnr_drop_db": float(drop), "contrast_drift": float(contrast_drift),
            "sharpness_drift": float(sharp_drift), "collapsed": collapsed}


def aggregate_long(per_clip: list[dict], lengths: Sequence[int]) -> dict:
    """Mean over long clips (curves, segment PSNR, drifts); ``collapsed`` if any clip collapsed."""
    n_seg = len(per_clip[0]["segments"])
    segs = [float(np.mean([c["segments"][k]["psnr"] for c in per_clip])) for k in range(n_seg)]
    return {
        "clips": len(per_clip),
        "segment_frames": [c["frames"] for c in per_clip[0]["segments"]],
        "segment_psnr": segs,
        "psnr_by_length": {str(n): float(np.mean([c["psnr_by_length"][str(n)] for c in per_clip])) for n in lengths},
        "psnr_drop_db": segs[0] - segs[-1],
        "contrast_drift": float(np.mean([c["contrast_drift"] for c in per_clip])),
        "sharpness_drift": float(np.mean([c["sharpness_drift"] for c in per_clip])),
        "collapsed": any(c["collapsed"] for c in per_clip),
        "psnr_frames": np.mean([c["psnr_frames"] for c in per_clip], axis=0).tolist(),
    }


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


# ----------------------------------------------------------------------------------------------- outputs


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    out = panel.copy()
    scale = max(panel.shape[0] / 256, 0.3)
    cv2.putText(out, text, (3, int(12 * scale / 0.5) if scale > 0.5 else 10), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_grid(path: Path, rows: list[dict[str, np.ndarray]], fps: float = 8.0) -> Path:
    """MP4 of labelled panels side by side; ``rows`` = per clip ``{label: frames [T, S, S, 3]}``, played in turn."""
    from hand2world.io import VideoWriter

    with VideoWriter(path, fps=fps) as writer:
        for panels in rows:
            t = min(len(v) for v in panels.values())
            for i in range(t):
                writer.write(np.concatenate([_label(v[i], k) for k, v in panels.items()], axis=1))
    return path


def _plot_curves(path: Path, curves: dict[str, list[float]], title: str, xlabel: str,
                 segments: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, ys in curves.items():
        ax.plot(np.arange(1, len(ys) + 1), ys, label=name, lw=1.2)
    if segments:
        n = max(len(ys) for ys in curves.values())
        for x in range(segments, n, segments):
            ax.axvline(x + 0.5, color="grey", lw=0.6, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:.{digits}f}"


def markdown_table(result: dict) -> str:
    """The results as markdown: the main table, then long rollouts."""
    lines = [f"Test clips: {result['clips']} from `{result['data']}` (split {result['split']}), "
             f"frames 1-{result['frames'] - 1} of each scored (frame 0 is the given scene).", "",
             "| model | kind | PSNR (dB) | SSIM | hand PSNR (dB) | occluded PSNR (dB) | camera err (°) | "
             "camera fail | flicker | LPIPS | FVD |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        a = m["metrics"]
        cam_fail = "-" if a.get("camera_fail_rate") is None else f"{100 * a['camera_fail_rate']:.0f} %"
        lines.append(f"| {name} | {m['kind']} | {_fmt(a.get('psnr'))} | {_fmt(a.get('ssim'), 3)} | "
                     f"{_fmt(a.get('hand_psnr'))} | {_fmt(a.get('occluded_psnr'))} | {_fmt(a.get('camera_err_deg'))} | "
                     f"{cam_fail} | {_fmt(a.get('flicker'))} | {_fmt(a.get('lpips'), 3)} | {_fmt(m.get('fvd'), 1)} |")
    lines += ["", f"Camera: mean true rotation of the scored pairs {_fmt(result.get('true_rotation_deg'))}°; "
              f"the `{GT_NAME}` row is the estimator's noise floor (same estimator on the true frames).",
              f"LPIPS: {result['lpips']}. FVD: {result['fvd']}."]
    pairs = result.get("paired") or {}
    if pairs:
        lines += ["", f"Paired per clip against `{pairs['reference']}` (mean ± standard error; positive = "
                  "the reference is better: PSNRs in dB, camera error in degrees; clips the reference wins / "
                  "clips with the metric):", "",
                  "| model | " + " | ".join(PAIRED_KEYS) + " |", "|---|" + "---|" * len(PAIRED_KEYS)]
        for name, row in pairs["models"].items():
            cells = [f"{_fmt(r['mean'])} ± {_fmt(r['se'])} ({r['better']}/{r['n']})" if r["n"] else "-"
                     for r in (row[k] for k in PAIRED_KEYS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("long"):
        lg = result["long"]
        first = next(iter(lg["models"].values()))
        heads = [f"PSNR {a}-{b}" for a, b in first["segment_frames"]]
        lines += ["", f"Long rollouts: {first['clips']} clips from `{lg['data']}`, lengths {lg['lengths']}.", "",
                  "| model | " + " | ".join(heads) + " | " + " | ".join(f"mean 1-{n}" for n in lg["lengths"])
                  + " | drop (dB) | contrast drift | sharpness drift | collapsed |",
                  "|---|" + "---|" * (len(heads) + len(lg["lengths"]) + 4)]
        for name, m in lg["models"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(x) for x in m["segment_psnr"]) + " | "
                         + " | ".join(_fmt(m["psnr_by_length"][str(n)]) for n in lg["lengths"])
                         + f" | {_fmt(m['psnr_drop_db'])} | {_fmt(m['contrast_drift'])} | "
                         f"{_fmt(m['sharpness_drift'])} | {'yes' if m['collapsed'] else 'no'} |")
    return "\n".join(lines) + "\n"


PAIRED_KEYS = ("occluded_psnr", "hand_psnr", "psnr", "camera_err_deg")
LOWER_IS_BETTER = frozenset({"camera_err_deg", "flicker", "lpips"})


def paired_differences(result: dict, keys: Sequence[str] = PAIRED_KEYS) -> dict:
    """Per-clip paired comparison of every other teacher/student against the first one in ``result``.

    Ablations differ by fractions of a dB, below the spread between clips, so the same clips are compared
    model against model. Returns ``{reference, models: {name: {key: {mean, se, n, better}}}}``: the mean
    per-clip difference signed so that positive = the reference is better (reference minus model for PSNR,
    model minus reference for errors such as ``camera_err_deg``), its standard error, the clips where both
    have the metric and how many the reference wins; empty without two such models.
    """
    names = [k for k, m in result["models"].items() if m["kind"] in ("teacher", "student")]
    if len(names) < 2:
        return {}
    ref = result["models"][names[0]]["per_clip"]
    out: dict[str, Any] = {"reference": names[0], "models": {}}
    for name in names[1:]:
        other = result["models"][name]["per_clip"]
        row = {}
        for key in keys:
            sign = -1.0 if key in LOWER_IS_BETTER else 1.0
            d = np.array([sign * (a[key] - b[key]) for a, b in zip(ref, other, strict=True)
                          if a.get(key) is not None and b.get(key) is not None], np.float64)
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            row[key] = {"mean": float(d.mean()) if len(d) else None, "se": se, "n": int(len(d)),
                        "better": int((d > 0).sum())}
        out["models"][name] = row
    return out


def _strip_curves(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_curves(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_curves(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ----------------------------------------------------------------------------------------------- driver


def run_eval(cfg: EvalConfig, specs: Sequence[ModelSpec], models: Sequence[VideoModel] | None = None) -> dict:
    """Evaluate ``specs`` (loaded here) and/or ready ``models`` plus the baseline; write outputs to ``cfg.out``.

    Returns the result dict that is also written to ``metrics.json``.
    """
    from hand2world.data import ClipDataset

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    given: list[VideoModel] = [*(models or []), *(load_model(s, cfg.teacher_steps) for s in specs)]
    autoencoders = [m.autoencoder for m in given if getattr(m, "autoencoder", None) is not None]
    oracles = [FlatHandOracle(), *([AutoencoderOracle(autoencoders[0])] if autoencoders else [])]
    loaded: list[Any] = [RepeatScene(), WarpedScene(), *oracles, *given]
    names = [m.name for m in loaded]
    if len(set(names)) != len(names) or GT_NAME in names:
        raise ValueError(f"model names must be unique and not {GT_NAME!r}: {names}")
    sizes = {m.size for m in loaded if m.size is not None}
    if len(sizes) > 1:
        raise ValueError(f"models of different resolutions in one evaluation: {sorted(sizes)}")
    ds = ClipDataset(cfg.data, keys=CLIP_KEYS, split=cfg.split)
    if len(ds) == 0:
        raise ValueError(f"no clips of split {cfg.split!r} in {cfg.data}")
    n = len(ds) if cfg.clips is None else min(cfg.clips, len(ds))
    first = ds[0]
    size = next(iter(sizes)) if sizes else first["video"].shape[1]
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
    for clip in tqdm(clips, desc="eval: noise floor", disable=not cfg.progress):
        hand = M.dilate_masks(clip["hand_mask"], dilate)
        per_model[GT_NAME].append(camera_errors(clip["video"], clip, hand))
    for model in loaded:
        per_model[model.name], videos[model.name] = [], []
        t0 = time.perf_counter()
        for i, clip in enumerate(tqdm(clips, desc=f"eval: {model.name}", disable=not cfg.progress)):
            frames = (model.frames(clip) if model.kind == "oracle" else
                      model.generate(clip["video"][0], clip["control"], clip["c2w"], clip["K"], seed=i))
            videos[model.name].append(frames)
            per_model[model.name].append(clip_metrics(frames, clip, dilate, lpips_model))
        seconds[model.name] = time.perf_counter() - t0

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

    # plots and grid
    curves = {m.name: np.mean([c["psnr_frames"] for c in per_model[m.name]], axis=0).tolist() for m in loaded}
    _plot_curves(out / "psnr_frames.png", curves, f"PSNR per generated frame (mean of {n} clips)", "frame")
    shown = [m for m in loaded if m.kind in ("teacher", "student")]
    shown.sort(key=lambda m: m.kind != "teacher")
    rows = [{"ground truth": c["video"], "control": c["control"], **{m.name: videos[m.name][i] for m in shown}}
            for i, c in enumerate(clips[:cfg.grid_clips])]
    write_grid(out / "grid.mp4", rows)
    outputs = {"json": "metrics.json", "markdown": "metrics.md", "psnr_plot": "psnr_frames.png", "grid": "grid.mp4"}

    # long rollouts
    lengths = tuple(sorted(set(cfg.long)))
    long_models = [m for m in loaded if m.kind in ("student", "baseline")]
    if lengths and any(m.kind == "student" for m in long_models):
        long_ds = long_dataset(cfg, size)
        total = max(lengths) + 1
        long_clips = [prepare_clip(long_ds[i], size) for i in range(min(cfg.long_clips, len(long_ds)))]
        long_res: dict[str, Any] = {"data": str(long_ds.root), "lengths": list(lengths), "models": {}}
        long_videos: dict[str, np.ndarray] = {}
        for model in long_models:
            per = []
            for i, clip in enumerate(tqdm(long_clips, desc=f"long rollout: {model.name}", disable=not cfg.progress)):
                c = {k: (v[:total] if k not in ("K",) else v) for k, v in clip.items()}
                frames = model.generate(c["video"][0], c["control"], c["c2w"], c["K"], seed=1000 + i)
                if i == 0:
                    long_videos[model.name] = frames
                per.append(long_metrics(frames, c["video"], lengths))
            long_res["models"][model.name] = aggregate_long(per, lengths)
        result["long"] = long_res
        _plot_curves(out / "long_rollout.png", {k: v["psnr_frames"] for k, v in long_res["models"].items()},
                     f"Long rollout: PSNR per frame (mean of {len(long_clips)} clips)", "frame",
                     segments=min(lengths))
        c0 = long_clips[0]
        baselines = {m.name for m in long_models if m.kind == "baseline"}
        write_grid(out / "long_grid.mp4", [{"ground truth": c0["video"][:total], "control": c0["control"][:total],
                                            **{k: v for k, v in long_videos.items()
                                               if k not in baselines}}], fps=16.0)
        outputs.update({"long_plot": "long_rollout.png", "long_grid": "long_grid.mp4"})
    elif lengths:
        result["long"] = None
        log.info("long rollouts skipped: no student given")
    result["outputs"] = outputs
    result["paired"] = paired_differences(result)
    result["seconds"] = time.perf_counter() - t_start
    result = _strip_curves(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    (out / "metrics.md").write_text(markdown_table(result))
    log.info("eval: wrote %s", ", ".join(str(out / v) for v in outputs.values()))
    return result
