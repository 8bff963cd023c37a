"""Outputs of an evaluation: the markdown table, PSNR curves and side-by-side grid videos.

Rules: everything here reads a finished result dict (``run_eval``'s) or frames; nothing is scored here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hand2world.eval.scores import GT_NAME, PAIRED_KEYS

__all__ = ["markdown_table", "plot_curves", "strip_curves", "write_grid"]


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


def plot_curves(path: Path, curves: dict[str, list[float]], title: str, xlabel: str,
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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def markdown_table(result: dict) -> str:
    """The results as markdown: the main table, then long rollouts."""
    lines = [f"Test clips: {result['clips']} from `{result['data']}` (split {result['split']}), "
             f"frames 1-{result['frames'] - 1} of each scored (frame 0 is the given scene).", "",
             "| model | kind | PSNR (dB) | SSIM | hand PSNR (dB) | occluded PSNR (dB) | background SSIM | "
             "hands found | camera err (°) | camera fail | flicker | LPIPS | FVD |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        a = m["metrics"]
        cam_fail = "-" if a.get("camera_fail_rate") is None else f"{100 * a['camera_fail_rate']:.0f} %"
        lines.append(f"| {name} | {m['kind']} | {_fmt(a.get('psnr'))} | {_fmt(a.get('ssim'), 3)} | "
                     f"{_fmt(a.get('hand_psnr'))} | {_fmt(a.get('occluded_psnr'))} | {_fmt(a.get('bg_ssim'), 3)} | "
                     f"{_pct(a.get('hands_found'))} | {_fmt(a.get('camera_err_deg'))} | "
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
    if result.get("real_photo"):
        lines += ["", "Real photos (the built-in scenes, driven by the cup video's gestures, static camera): "
                  "background SSIM against the photo outside the dilated control hands; hands found by MediaPipe "
                  "in the frames whose control shows a hand.", "",
                  "| model | background SSIM | hands found | per scene (SSIM / found) | strip |",
                  "|---|---|---|---|---|"]
        for name, m in result["real_photo"].items():
            per = ", ".join(f"{k} {_fmt(v['background_ssim'], 3)} / {_pct(v['detection'])}"
                            for k, v in m["scenes"].items())
            lines.append(f"| {name} | {_fmt(m['background_ssim'], 3)} | {_pct(m['detection'])} | {per} | "
                         f"{Path(m['strip']).name} |")
    return "\n".join(lines) + "\n"


def strip_curves(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_curves(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [strip_curves(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
