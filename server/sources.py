"""Frame sources: what turns conditioning (control render + camera) into the frames a session streams.

``FrameSource`` has exactly the shape of the video model's ``StreamingGenerator`` (docs/architecture.md):
``start(scene_rgb, K=None)``, ``step(control [T,H,W,3] uint8, c2w [T,4,4]) -> frames [T,H,W,3]``,
``reset()``. The server only ever talks to that protocol; ``load_source("generator", weights=...)``
returns a ``hand2world.stream.StreamingGenerator`` (weights loaded once per server, one generator
and KV cache per session), ``load_source("auto")`` the generator when its weights exist, else the
preview.

``PreviewSource`` is the fallback when no generator weights exist, and it is honest about what it
is: the *conditioning preview*, not generated video. Like the generator it owns its stream's
reference camera (the first ``c2w`` after ``start``/``reset``). It composites the session's real control render
over the chosen scene photo, re-projects the photo by the head rotation (a pure-rotation
homography ``K R K^-1`` relative to the first pose, so dragging the view pans the photo the way
the Plücker rays say the camera turned), insets the Plücker-ray visualisation, and stamps
"PREVIEW" on every frame. ``mode == "preview"`` is reported in stats, the HUD and the docs.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from hand2world.geometry import intrinsics_from_fov, plucker_rays, plucker_to_rgb
from hand2world.io import fit_cover as io_fit_cover

log = logging.getLogger(__name__)


@runtime_checkable
class FrameSource(Protocol):
    """A streaming frame producer with the ``StreamingGenerator`` interface.

    Attributes:
        name: short identifier shown in stats.
        mode: ``"preview"`` (conditioning preview) or ``"generator"`` (generated video).
        height, width: output size; control renders passed to ``step`` must have this size.
    """

    name: str
    mode: str
    height: int
    width: int

    def start(self, scene_rgb: np.ndarray, K: np.ndarray | None = None) -> Any:
        """Begin a stream on a scene photo (uint8 [H, W, 3], any size) with intrinsics K (3x3)."""

    def step(self, control: np.ndarray, c2w: np.ndarray) -> np.ndarray:
        """control uint8 [T, H, W, 3], c2w float [T, 4, 4] -> frames uint8 [T, H, W, 3]."""

    def reset(self) -> Any:
        """Forget the stream's history (keeps the scene)."""


def fit_cover(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize + centre-crop an image to exactly ``height x width`` (cover, aspect kept): ``hand2world.io.fit_cover``."""
    return io_fit_cover(rgb, height, width)[0]


class PreviewSource:
    """Conditioning preview: control render over the (rotation-warped) scene photo. Not generated video."""

    name = "preview"
    mode = "preview"

    def __init__(self, height: int = 240, width: int = 320, fov_deg: float = 60.0, alpha: float = 0.85,
                 inset: float = 0.25, label: bool = True) -> None:
        self.height, self.width = height, width
        self.alpha, self.inset, self.label = alpha, inset, label
        self.K = np.asarray(intrinsics_from_fov(fov_deg, height, width), dtype=np.float64)
        self._scene: np.ndarray | None = None
        self._c2w0: np.ndarray | None = None

    def start(self, scene_rgb: np.ndarray, K: np.ndarray | None = None) -> PreviewSource:
        scene = np.asarray(scene_rgb)
        if scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3:
            raise ValueError(f"scene must be uint8 [H, W, 3], got {scene.dtype} {scene.shape}")
        if K is not None:
            self.K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        self._scene = fit_cover(scene, self.height, self.width)
        self.reset()
        return self

    def reset(self) -> PreviewSource:
        self._c2w0 = None
        return self

    def _background(self, c2w: np.ndarray) -> np.ndarray:
        assert self._scene is not None
        if self._c2w0 is None:
            self._c2w0 = c2w.copy()
        R = (np.linalg.inv(self._c2w0) @ c2w)[:3, :3]
        if np.allclose(R, np.eye(3), atol=1e-6):
            return self._scene.copy()
        H = self.K @ R @ np.linalg.inv(self.K)  # new-view pixel -> first-view pixel
        return cv2.warpPerspective(self._scene, H, (self.width, self.height),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)

    def _rays_inset(self, c2w: np.ndarray) -> np.ndarray:
        assert self._c2w0 is not None
        h, w = max(8, int(self.height * self.inset)), max(8, int(self.width * self.inset))
        rel = np.linalg.inv(self._c2w0) @ c2w
        K = self.K.copy()
        K[:2] *= np.array([[w / self.width], [h / self.height]])
        rays = plucker_rays(torch.from_numpy(K).float(), torch.from_numpy(rel).float(), h, w)
        return plucker_to_rgb(rays)

    def _draw_label(self, frame: np.ndarray) -> None:
        """Stamp "PREVIEW" and "conditioning, not generated video" (scaled to fit the width)."""
        lines, y = [], 4
        for text, frac in (("PREVIEW", 0.3), ("conditioning, not generated video", 0.9)):
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
            scale = frac * self.width / tw
            y += int(th * scale) + 4
            lines.append((text, y, scale, int(tw * scale)))
        box = frame[:y + 5, :max(w for *_, w in lines) + 10]
        box[:] = (box * 0.45).astype(np.uint8)  # darken behind the text so it reads on any photo
        for text, y, scale, _ in lines:
            cv2.putText(frame, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)

    def step(self, control: np.ndarray, c2w: np.ndarray) -> np.ndarray:
        if self._scene is None:
            raise RuntimeError("call start(scene) before step()")
        control = np.asarray(control)
        c2w = np.asarray(c2w, dtype=np.float64)
        if control.dtype != np.uint8 or control.ndim != 4 or control.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"control must be uint8 [T, {self.height}, {self.width}, 3], got {control.shape}")
        if c2w.shape != (control.shape[0], 4, 4):
            raise ValueError(f"c2w must be [T, 4, 4] with T={control.shape[0]}, got {c2w.shape}")
        out = np.empty_like(control)
        for i in range(control.shape[0]):
            frame = self._background(c2w[i])
            mask = control[i].any(axis=2)
            if mask.any():
                blend = self.alpha * control[i][mask] + (1 - self.alpha) * frame[mask]
                frame[mask] = blend.astype(np.uint8)
            if self.inset > 0:
                inset = self._rays_inset(c2w[i])
                ih, iw = inset.shape[:2]
                frame[-ih - 4:-4, -iw - 4:-4] = inset
            if self.label:
                self._draw_label(frame)
            out[i] = frame
        return out


def generator_weights(weights: str | None = None) -> Path | None:
    """The student folder ``weights`` (default: the shipped ``"default"``) names, or None when it is absent."""
    from hand2world.paths import checkpoint_path

    folder = checkpoint_path(weights or "default", must_exist=False)
    return folder if (folder / "config.json").is_file() else None


def generator_size(weights: str | None = None) -> tuple[int, int]:
    """Output (height, width) of a student folder, from its ``config.json`` (no weights loaded)."""
    from hand2world.checkpoints import resolve_model_folder
    from hand2world.models.config import load_config

    cfg = load_config(resolve_model_folder(weights or "default") / "config.json")
    return cfg.latent_size[0] * cfg.vae_factor, cfg.latent_size[1] * cfg.vae_factor


def resolve_source(kind: str, weights: str | None = None) -> tuple[str, str]:
    """``"auto"`` -> ``"generator"`` when the weights exist, else ``"preview"``; returns (kind, why)."""
    if kind != "auto":
        return kind, f"--source {kind}"
    folder = generator_weights(weights)
    if folder is not None:
        return "generator", f"--source auto: generator weights found at {folder}"
    from hand2world.paths import checkpoint_path

    where = checkpoint_path(weights or "default", must_exist=False)
    return "preview", (f"--source auto: no generator weights at {where} (name {weights or 'default'!r}), so this "
                       "serves the conditioning PREVIEW, not generated video; distill a student "
                       "(`hand2world distill`) and pass --weights RUN/final, or copy a release to weights/default")


@lru_cache(maxsize=2)
def _load_student(folder: str, device: str, stamp: float) -> tuple[Any, Any, Any]:
    """Weights shared by every session of a server (each session has its own generator and KV cache)."""
    from hand2world.checkpoints import load_video_model

    model, ae, stream, _ = load_video_model(folder, device)
    return model, ae, stream


def load_source(kind: str = "preview", height: int = 240, width: int = 320, fov_deg: float = 60.0,
                weights: str | None = None, device: str = "cpu") -> FrameSource:
    """Build the session's frame source.

    ``"preview"``: ``PreviewSource``. ``"generator"``: a ``hand2world.stream.StreamingGenerator`` on the
    student folder ``weights`` (default: the shipped ``"default"``); its weights are loaded once per
    server and shared by the sessions. ``"auto"``: the generator when its weights exist, else preview.
    """
    kind, _ = resolve_source(kind, weights)
    if kind == "preview":
        return PreviewSource(height, width, fov_deg)
    if kind == "generator":
        from hand2world.checkpoints import resolve_model_folder
        from hand2world.models.config import StreamConfig
        from hand2world.stream import StreamingGenerator

        folder = resolve_model_folder(weights or "default")  # FileNotFoundError with the hint when absent
        stamp = max(p.stat().st_mtime for p in folder.iterdir() if p.is_file())
        model, ae, stream = _load_student(str(folder), device, stamp)
        gen = StreamingGenerator(model, ae, stream or StreamConfig(), name="generator")
        if (gen.height, gen.width) != (height, width):
            raise ValueError(f"the generator runs at {gen.height}x{gen.width}; start the server with "
                             f"--height {gen.height} --width {gen.width} (or leave them out)")
        return gen
    raise ValueError(f"unknown frame source {kind!r}; expected 'auto', 'preview' or 'generator'")
