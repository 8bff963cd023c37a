"""The models an evaluation compares, behind one interface (``VideoModel``).

Rules:
- A model is anything with ``name``, ``kind``, ``size`` and ``generate(scene, control, c2w, K, seed)
  -> [T, S, S, 3]``: ``RepeatScene`` (the baseline of the floors, always evaluated), ``WarpedScene``
  (the scene warped by the camera through a 0.5 m plane: the geometric prior alone, always
  evaluated), ``TeacherModel`` (``TeacherSampler``, chained windows) and ``StudentModel``
  (``StreamingGenerator``: ``start`` with the scene, then ``step`` over the remaining frames in
  chunks of its block).
- ``GuideOnlyReference`` (kind ``reference``, the deterministic row) is a model too: it reads only
  what a model is given (the warped photo and the control render).
- References that read the ground truth have kind ``oracle`` and ``frames(clip)`` instead:
  ``FlatHandOracle`` (true visible hands in flat true colour on the warped photo) and
  ``AutoencoderOracle`` (the true frames through an evaluated model's autoencoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hand2world.eval.scores import WARP_DEPTH, warp_photo

__all__ = ["AutoencoderOracle", "FlatHandOracle", "GuideOnlyReference", "ModelSpec", "RepeatScene", "StudentModel",
           "TeacherModel", "VideoModel", "WarpedScene", "detect_kind", "load_model", "parse_model_arg"]


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
    """Baseline: the scene photo warped into each frame's camera through a fronto-parallel plane at ``depth``
    (``scores.warp_photo``) — the geometric prior every model is given, alone (no hands, no parallax beyond the
    plane). It is the reference the floors compare against."""

    kind, size = "baseline", None

    def __init__(self, depth: float = WARP_DEPTH) -> None:
        self.depth = depth
        self.name = f"warped photo ({depth:g} m plane)"

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        return warp_photo(scene, c2w, K, self.depth)


class FlatHandOracle:
    """Reference that reads the ground truth: the warped photo with each frame's visible hand pixels (true
    ``visible_mask``) painted that frame's true mean hand colour. It is what a model scores that puts every hand
    exactly where it is seen, in exactly the right average colour, but draws no shading: the headroom of the
    hand-region floor for models that only get silhouette and colour right."""

    name, kind, size = "oracle: flat true-colour hands", "oracle", None

    def frames(self, clip: dict[str, Any]) -> np.ndarray:
        """``[T, S, S, 3]`` uint8 for a prepared clip (``video``, ``visible_mask``, ``warped``, ``scene``)."""
        video, vis = clip["video"], clip["visible_mask"]
        out = clip["warped"].copy()
        for t in range(len(video)):
            if vis[t].any():
                out[t][vis[t]] = video[t][vis[t]].reshape(-1, 3).mean(0).round().astype(np.uint8)
        out[0] = clip["scene"]
        return out


def _unit(frames: np.ndarray, like: Any) -> Any:
    """uint8 ``[T, H, W, 3]`` -> ``[1, 3, T, H, W]`` in [-1, 1] on ``like``'s device and dtype."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    return x.to(device=like.device, dtype=like.dtype)


def _uint8(video: Any) -> np.ndarray:
    """``[3, T, H, W]`` in [-1, 1] -> uint8 ``[T, H, W, 3]``."""
    import torch

    return video.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def _guide(clip: dict[str, Any], like: Any) -> Any:
    """The composite decoder's guide of a prepared clip: ``[1, 6, T, H, W]`` (warped photo, control)."""
    from hand2world.models.composite import composite_guide

    return composite_guide(_unit(clip["warped"], like), _unit(clip["control"], like))


class AutoencoderOracle:
    """Reference that reads the ground truth: every true frame through the evaluated model's autoencoder
    (encode, decode; a composite one decodes over the clip's warped photo and control render). No latent
    model can score above it, so it separates what the autoencoder loses from what the diffusion model
    gets wrong (e.g. whether hands are lost in the latents or never drawn)."""

    name, kind, size = "oracle: autoencoder round trip", "oracle", None

    def __init__(self, autoencoder: Any) -> None:
        self.ae = autoencoder

    def frames(self, clip: dict[str, Any]) -> np.ndarray:
        """``[T, S, S, 3]`` uint8: the prepared clip's ``video`` encoded and decoded (frame 0: the scene)."""
        import torch

        w = next(self.ae.parameters())
        x = _unit(clip["video"], w)
        with torch.no_grad():
            out = _uint8(self.ae.decode(self.ae.encode(x), _guide(clip, w) if self.ae.needs_guide else None)[0])
        out[0] = clip["scene"]
        return out


class GuideOnlyReference:
    """The deterministic reference: a composite decoder trained on the warped photo and the control render alone
    (``AUTOENCODER_PRESETS["composite-guide-only"]``: no latent, no history), decoding with the latent zeroed.
    What it scores, the geometry and the control render give without any generative model; the distance of a
    model above it is what the generative model adds."""

    kind, size = "reference", None

    def __init__(self, path: str, name: str = "deterministic: warped photo + control, no latent") -> None:
        from hand2world.checkpoints import load_autoencoder

        self.name, self.path = name, path
        self.ae = load_autoencoder(path)
        if not self.ae.needs_guide:
            raise ValueError(f"{path} is not a composite autoencoder (kind {self.ae.config.kind!r})")

    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray, K: np.ndarray,
                 seed: int = 0) -> np.ndarray:
        """``[T, S, S, 3]`` uint8 from the photo warped into each camera and the control renders (frame 0: scene)."""
        import torch

        w = next(self.ae.parameters())
        clip = {"warped": warp_photo(scene, c2w, K, self.ae.config.guide_warp_depth), "control": control}
        guide = _guide(clip, w)[0].transpose(0, 1)  # [T, 6, H, W]
        f = self.ae.spatial_factor
        z = torch.zeros(guide.shape[0], self.ae.latent_channels, guide.shape[2] // f, guide.shape[3] // f,
                        device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out = _uint8(self.ae.decode_frames(z, guide, normalized=False).transpose(0, 1))
        out[0] = scene
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
