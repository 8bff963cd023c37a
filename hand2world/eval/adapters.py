"""The models an evaluation compares, behind one interface (``VideoModel``).

Rules:
- A model is anything with ``name``, ``kind``, ``size`` and ``generate(scene, control, c2w, K, seed)
  -> [T, S, S, 3]``: ``RepeatScene`` (the baseline of the floors, always evaluated), ``WarpedScene``
  (the scene warped by the camera through a 0.5 m plane: the geometric prior alone, always
  evaluated), ``TeacherModel`` (``TeacherSampler``, chained windows) and ``StudentModel``
  (``StreamingGenerator``: ``start`` with the scene, then ``step`` over the remaining frames in
  chunks of its block).
- References that read the ground truth have kind ``oracle`` and ``frames(clip)`` instead:
  ``FlatHandOracle`` (true visible hands in flat true colour on the warped scene) and
  ``AutoencoderOracle`` (the true frames through an evaluated model's autoencoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["AutoencoderOracle", "FlatHandOracle", "ModelSpec", "RepeatScene", "StudentModel", "TeacherModel",
           "VideoModel", "WarpedScene", "detect_kind", "load_model", "parse_model_arg"]


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
