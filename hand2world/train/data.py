"""Training data for the video model: clip sources, resizing, Plücker rays, deterministic sampling.

Design choices:
- Reads the ``hand2world.data.ClipDataset`` interface (``video``, ``control`` uint8
  ``[T, H, W, 3]``, ``K [3, 3]``, ``c2w [T, 4, 4]``). ``ProceduralClips`` produces the same dict
  in memory (a textured table the camera pans over, a hand-shaped blob moving on it and its
  control render): for tests and smoke runs before/without synthetic-world data.
- Clips are resized (short side) and centre-cropped to the square training size once, with
  ``K`` adjusted exactly; rays are computed per window relative to its first frame.
- Which clips a step reads, its temporal crop, noise and timesteps all derive from
  ``(seed, step, micro-step, rank)``: a resumed run replays exactly, DDP ranks see disjoint
  samples, and no RNG state needs saving.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from hand2world.data import scene_image
from hand2world.geometry import intrinsics_from_fov, plucker_rays, relative_c2w
from hand2world.io import fit_square

log = logging.getLogger(__name__)

__all__ = ["ClipSource", "ProceduralClips", "batch_indices", "open_dataset", "step_generator"]

_FILL, _WIRE = (255, 140, 30), (115, 45, 0)


class ProceduralClips:
    """In-memory clips in the ClipDataset format (deterministic per index).

    Args:
        n: number of clips.
        frames: frames per clip.
        size: square frame size.
        seed: base seed.
    """

    def __init__(self, n: int = 64, frames: int = 9, size: int = 64, seed: int = 0) -> None:
        self.n, self.frames, self.size, self.seed = n, frames, size, seed
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i not in self._cache:
            self._cache[i] = self._make(i)
        return self._cache[i]

    def _make(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        s, t_n = self.size, self.frames
        big = 2 * s
        yy, xx = np.mgrid[0:big, 0:big] / big
        c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
        canvas = (c0 * (1 - yy[..., None]) + c1 * xx[..., None]).astype(np.uint8)
        for _ in range(int(rng.integers(3, 7))):  # objects on the table
            colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
            x, y = (int(v) for v in rng.integers(0, big, 2))
            r = int(rng.integers(s // 16 + 1, s // 5 + 2))
            if rng.random() < 0.5:
                cv2.circle(canvas, (x, y), r, colour, -1)
            else:
                cv2.rectangle(canvas, (x - r, y - r), (x + r, y + r), colour, -1)
        K = intrinsics_from_fov(60.0, s, s).numpy().astype(np.float32)
        f = float(K[0, 0])
        pan = rng.uniform(-0.15, 0.15, 2) * s  # pixels over the clip
        hand0, hand1 = rng.uniform(0.25, 0.75, 2) * s, rng.uniform(0.25, 0.75, 2) * s
        angle0 = rng.uniform(0, 180)
        video = np.empty((t_n, s, s, 3), np.uint8)
        control = np.zeros((t_n, s, s, 3), np.uint8)
        c2w = np.tile(np.eye(4, dtype=np.float32), (t_n, 1, 1))
        for k in range(t_n):
            a = k / max(t_n - 1, 1)
            off = s // 2 + pan * a
            ox, oy = int(round(off[0])), int(round(off[1]))
            frame = np.ascontiguousarray(canvas[oy:oy + s, ox:ox + s])
            c2w[k, 0, 3], c2w[k, 1, 3] = pan[0] * a / f, pan[1] * a / f  # scene at 1 m depth
            cx, cy = (hand0 * (1 - a) + hand1 * a).astype(int)
            axes = (max(2, s // 10), max(3, s // 6))
            ang = angle0 + 40 * a
            cv2.ellipse(frame, (int(cx), int(cy)), axes, ang, 0, 360, (225, 180, 150), -1)
            cv2.ellipse(control[k], (int(cx), int(cy)), axes, ang, 0, 360, _FILL, -1)
            cv2.ellipse(control[k], (int(cx), int(cy)), axes, ang, 0, 360, _WIRE, 1)
            video[k] = frame
        return {"video": video, "control": control, "K": K, "c2w": c2w}


def open_dataset(data: Any, control_input: str = "render") -> Any:
    """The configured clip dataset: ``ClipDataset(root)`` or procedural clips.

    ``control_input="mask"`` (the mask-conditioning ablation) also loads the visible-hand masks.
    """
    if data.root:
        from hand2world.data import ClipDataset

        root = Path(data.root).expanduser()
        if not (root / "index.json").is_file():
            raise FileNotFoundError(f"no clip dataset at {root} (make one with `hand2world world synth --out {root}`)")
        keys = ("video", "control", "K", "c2w", "scene") + (("visible_mask",) if control_input == "mask" else ())
        return ClipDataset(root, keys=keys, split=data.split)
    return ProceduralClips(n=data.procedural_clips, frames=data.frames, size=data.size, seed=data.seed)


class ClipSource:
    """Prepared clips (square, model resolution) from a ClipDataset-like object.

    Args:
        dataset: ``ClipDataset`` or ``ProceduralClips`` (``len`` and ``[i] -> dict``).
        size: training resolution.
        frames: window length in frames.
    """

    def __init__(self, dataset: Any, size: int, frames: int) -> None:
        self.dataset, self.size, self.frames = dataset, size, frames
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def clip_id(self, i: int) -> int:
        """The dataset-wide clip number of item ``i`` (differs from ``i`` under a split filter)."""
        ids = getattr(self.dataset, "ids", None)
        return int(ids[i]) if ids is not None else int(i)

    def clip(self, i: int) -> dict[str, np.ndarray]:
        """``video``/``control`` uint8 ``[T, S, S, 3]``, ``K [3, 3]``, ``c2w [T, 4, 4]``, ``scene [S, S, 3]`` and
        ``scene_photo`` (cached).

        ``scene`` is the clip's scene photo (the first camera's view without hands, as live use gives),
        ``scene_photo`` True; a clip without one (annotated real video, older datasets) gives frame 0
        and False."""
        if i not in self._cache:
            item = self.dataset[i]
            if item["video"].shape[0] < self.frames:
                raise ValueError(f"clip {i} has {item['video'].shape[0]} frames < {self.frames} needed")
            video, K = fit_square(item["video"], self.size, np.asarray(item["K"]))
            control, _ = fit_square(item["control"], self.size, np.asarray(item["K"]))
            photo = item.get("scene")
            scene = fit_square(scene_image(item)[None], self.size, np.asarray(item["K"]))[0][0]
            self._cache[i] = {"video": video, "control": control, "K": K, "scene": scene,
                              "scene_photo": photo is not None, "c2w": np.asarray(item["c2w"], np.float32)}
            if "visible_mask" in item:  # the mask-conditioning ablation's control (white visible hand pixels)
                from hand2world.render import mask_control

                self._cache[i]["visible"] = fit_square(mask_control(item["visible_mask"]), self.size,
                                                        np.asarray(item["K"]))[0]
        return self._cache[i]

    def window(self, i: int, start: int) -> dict[str, Tensor]:
        """The window's frames (``window_frames``): video/control ``[3, T, S, S]`` in [-1, 1], rays ``[6, T, S, S]``;
        with a scene photo, frame 0 is the photo and its control is black (no hands)."""
        c = self.clip(i)
        sel = self.window_frames(i, start)
        video, control = c["video"][sel], c["control"][sel]
        if c["scene_photo"]:
            video[0], control[0] = c["scene"], 0
        def to_t(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a).permute(3, 0, 1, 2).float() / 127.5 - 1.0
        return {"video": to_t(video), "control": to_t(control), "rays": self.rays(i, start)}

    def window_frames(self, i: int, start: int) -> list[int]:
        """The clip frames of the window at ``start``: ``start .. start + frames - 1``, or, for a clip with a
        scene photo, frame 0 (the photo's camera: the window's scene) then ``start + 1 .. start + frames - 1``."""
        first = 0 if self.clip(i)["scene_photo"] else start
        return [first, *range(start + 1, start + self.frames)]

    def rel_c2w(self, i: int, start: int) -> Tensor:
        """Camera poses ``[T, 4, 4]`` of a window's frames (``window_frames``) relative to its first camera."""
        return relative_c2w(torch.from_numpy(self.clip(i)["c2w"][self.window_frames(i, start)]))

    def rays(self, i: int, start: int) -> Tensor:
        """Plücker rays ``[6, T, S, S]`` of a window, relative to its first camera."""
        return plucker_rays(torch.from_numpy(self.clip(i)["K"]), self.rel_c2w(i, start), self.size,
                            self.size).transpose(0, 1)

    def max_start(self, i: int) -> int:
        return self.clip(i)["video"].shape[0] - self.frames


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """The generator for everything random in one (step, micro-step, rank)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1009 + micro) * 257 + rank)


def batch_indices(n: int, batch: int, seed: int, step: int, micro: int, rank: int, world: int,
                  grad_accum: int) -> list[int]:
    """Clip indices of one micro-batch: epochs of seeded permutations, disjoint across ranks."""
    out = []
    base = ((step * grad_accum + micro) * world + rank) * batch
    for j in range(batch):
        pos = base + j
        epoch, k = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        out.append(int(perm[k]))
    return out
