"""The real-photo section of ``eval``: real scene photos driven by a real gesture video, as a new user tries it.

No ground truth exists for a photo and someone else's gestures, so the section measures what a user
sees:
- **background SSIM**: SSIM of each generated frame against the photo (static camera: the photo is
  what every frame should show away from the hands), over the pixels outside the control render's
  hands dilated by ``dilate`` pixels (shadows and contact sit beside the hand);
- **hand detection**: how often MediaPipe finds a hand (``tracking.hands_found``, frames upscaled to
  512 px) in the generated frames whose control render shows a hand;
- a PNG strip per model: for each scene, a few frames (generated over their control render).

Rules: every model gets the same inputs (the photo cover-cropped to its resolution, the gesture
controls rendered at that resolution, identity cameras, the intrinsics the gestures were rendered
with); the scenes are the photos ``serve`` offers as built-ins, never seen in training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hand2world.eval import metrics as M
from hand2world.io import fit_cover
from hand2world.tracking import detection_rate, hands_found

log = logging.getLogger(__name__)

__all__ = ["builtin_scenes", "cup_gestures", "real_photo_section", "strip_png"]


def builtin_scenes() -> dict[str, np.ndarray]:
    """The photos ``serve`` offers as built-in scenes (``server.scenes``), by name."""
    from hand2world.server.scenes import BUILTIN_SCENES, load_builtin

    return {name: load_builtin(name) for name in BUILTIN_SCENES}


def cup_gestures(frames: int = 48) -> Any:
    """The real gesture video (the cup video: a real hand, tracked, fitted and rendered) as
    ``size -> {"control", "K"}``, rendered once per size; FileNotFoundError when it is not set up."""
    from hand2world.generate import load_gestures
    from hand2world.paths import asset_path

    path = asset_path("cup.mp4")
    cache: dict[int, dict[str, Any]] = {}

    def at(size: int) -> dict[str, Any]:
        if size not in cache:
            g = load_gestures(path, size, max_frames=frames)
            cache[size] = {"control": g["control"], "K": g["K"]}
        return cache[size]
    return at


def _hand_mask(control: np.ndarray, dilate: int) -> np.ndarray:
    """bool ``[T, H, W]``: control pixels that show a hand, dilated."""
    return M.dilate_masks(control.max(-1) > 8, dilate)


def strip_png(rows: list[list[np.ndarray]], path: Path, labels: list[str] | None = None) -> Path:
    """Write rows of equally sized uint8 RGB tiles as one PNG (a label at the left of each row)."""
    lines = []
    for k, tiles in enumerate(rows):
        line = np.concatenate(tiles, 1)
        if labels:
            cv2.putText(line, labels[k], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(lines, 0), cv2.COLOR_RGB2BGR))
    return path


def real_photo_section(models: list[Any], scenes: dict[str, np.ndarray], gestures: Any, out: Path,
                       dilate: int = 8, strip_frames: int = 4, seed: int = 0) -> dict[str, Any]:
    """Generate every scene with every model and score background and hands.

    Args:
        models: eval adapters (``name``, ``size``, ``generate(scene, control, c2w, K, seed)``); ``size`` None
            means any resolution (then 256).
        scenes: name -> uint8 RGB photo (any size).
        gestures: ``size -> {"control": [T, S, S, 3], "K": [3, 3]}`` (``generate.load_gestures`` at that size).
        out: folder for ``real_photo_<model>.png``.

    Returns:
        ``{model: {"scenes": {scene: {"background_ssim", "detection", "hand_frames"}}, "background_ssim",
        "detection", "strip"}}`` (means over scenes).
    """
    report: dict[str, Any] = {}
    for model in models:
        size = int(model.size or 256)
        g = gestures(size)
        control, K = g["control"], g["K"]
        n = len(control)
        c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
        hands = _hand_mask(control, dilate)
        shows = control.reshape(n, -1).max(1) > 8
        per: dict[str, Any] = {}
        rows, labels = [], []
        for name, photo in scenes.items():
            scene = fit_cover(photo, size, size)[0]
            frames = np.asarray(model.generate(scene, control, c2w, K, seed=seed))
            bg = [M.ssim(frames[t], scene, mask=~hands[t]) for t in range(1, n)]
            found = hands_found(frames[1:])
            per[name] = {"background_ssim": float(np.nanmean(bg)), "detection": detection_rate(found, shows[1:]),
                         "hand_frames": int(shows[1:].sum())}
            pick = np.linspace(1, n - 1, strip_frames).round().astype(int)
            rows.append([scene] + [frames[t] for t in pick] + [control[pick[-1]]])
            labels.append(f"{name}: photo | generated | control")
            log.info("real photo %s / %s: background SSIM %.3f, hands found %s of %d frames", model.name, name,
                     per[name]["background_ssim"], per[name]["detection"], per[name]["hand_frames"])
        safe = "".join(ch if ch.isalnum() else "_" for ch in model.name)
        strip = strip_png(rows, Path(out) / f"real_photo_{safe}.png", labels)
        dets = [v["detection"] for v in per.values() if v["detection"] is not None]
        report[model.name] = {"scenes": per, "background_ssim": float(np.mean([v["background_ssim"]
                                                                               for v in per.values()])),
                              "detection": float(np.mean(dets)) if dets else None, "strip": str(strip)}
    return report
