"""`hand2world generate`: scene photo + gestures (+ camera) -> video, from the student or a teacher.

Design choices:
- ``TeacherSampler`` loads a self-contained teacher checkpoint (DiT + its autoencoder) and
  samples windows of ``window`` frames with Euler steps and optional guidance. Longer gesture
  sequences are chained: each window starts from the previous window's last generated frame
  as its scene (overlap of one frame), with camera poses made relative to that frame. A teacher
  whose autoencoder composites over the photo (``needs_guide``) starts every window from the scene
  photo instead, with poses relative to the photo's camera, as it was trained, and decodes over
  the photo warped into each frame's camera.
- Gestures come from a video (tracked with MediaPipe, fitted and rendered by the Foundation's
  ``ControlPipeline``), a ClipDataset folder (``--clip-index``) or an ``.npz`` with
  ``control [T, H, W, 3]`` (and optionally ``c2w``, ``K``). Frames are resized/cropped to the
  model resolution with ``K`` adjusted.
- The output MP4 shows generated | control (| ground truth, for clips).
- ``--student`` (``run_generate_student``) generates with a causal student through
  ``hand2world.stream.StreamingGenerator`` (the one rollout) instead; both load model folders
  through ``hand2world.checkpoints.load_video_model``. With no model flag the command uses the
  shipped student ``weights/default``, as ``serve`` does.
- This module owns the whole ``generate`` command (``register``, listed in
  ``hand2world.cli.COMMAND_MODULES``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hand2world.diffusion import euler_sample
from hand2world.geometry import intrinsics_from_fov, plucker_rays, relative_c2w
from hand2world.io import fit_square
from hand2world.models import Conditioning, DiT, scene_channels, scene_latents
from hand2world.models.composite import composite_guide, warp_image

log = logging.getLogger(__name__)

DEFAULT_STUDENT = "default"  # the shipped student (weights/default), as `serve` loads
TEACHER_STEPS = 20  # Euler steps of teacher sampling unless --steps

__all__ = ["TeacherSampler", "load_gestures", "run_generate", "run_generate_student"]


class TeacherSampler:
    """Bidirectional teacher sampling on uint8 frames.

    Args:
        model: the DiT (eval mode).
        autoencoder: its autoencoder (``encode``/``decode``).
        window: frames per sampled window.
    """

    def __init__(self, model: DiT, autoencoder: Any, window: int = 9) -> None:
        self.model, self.ae, self.window = model.eval(), autoencoder.eval(), window
        cfg = model.config
        self.size = cfg.latent_size[0] * cfg.vae_factor

    @classmethod
    def from_checkpoint(cls, path: str | Path, window: int | None = None,
                        device: torch.device | str = "cpu") -> TeacherSampler:
        """Load ``final/`` (EMA weights) or a step checkpoint (its EMA weights when present), through the one
        model-folder loader (``hand2world.checkpoints.load_video_model``: checksums verified when present)."""
        from hand2world.checkpoints import load_video_model

        model, ae, _, run = load_video_model(path, device)
        if window is None:
            window = int(run.get("data", {}).get("frames", 9))
        return cls(model, ae, window)

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0).to(dev)

    @torch.no_grad()
    def generate(self, scene: np.ndarray, control: np.ndarray, c2w: np.ndarray | None = None,
                 K: np.ndarray | None = None, steps: int = 20, guidance_hands: float = 1.0,
                 guidance_camera: float = 1.0, seed: int = 0) -> np.ndarray:
        """Generate frames.

        Args:
            scene: uint8 ``[S, S, 3]`` first frame (model resolution).
            control: uint8 ``[T, S, S, 3]`` control renders.
            c2w: ``[T, 4, 4]`` camera-to-world (default: static camera).
            K: ``[3, 3]`` intrinsics at the model resolution (default: 60° horizontal FOV).

        Returns:
            uint8 ``[T, S, S, 3]``; frame 0 is the scene.
        """
        s, n = self.size, len(control)
        if self.model.config.control_input == "mask":  # mask-conditioned ablation: the render's full silhouette
            from hand2world.render import control_silhouette

            control = control_silhouette(control)
        c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)) if c2w is None else np.asarray(c2w, np.float32)
        K = intrinsics_from_fov(60.0, s, s).numpy() if K is None else np.asarray(K, np.float32)
        g = torch.Generator().manual_seed(seed)
        photo = self.ae.needs_guide  # composite: every window starts from the photo, cameras relative to its
        out, start, current = [scene], 0, scene
        while start < n - 1:
            stop = min(start + self.window, n)
            sel = [0 if photo else start, *range(start + 1, stop)]
            ctl_px = control[sel].copy()
            if photo:
                ctl_px[0] = 0  # the photo's frame has no hands (as in training)
            ctl = self._to_tensor(ctl_px)
            rel = relative_c2w(torch.from_numpy(c2w[sel]))
            rays = plucker_rays(torch.from_numpy(K), rel, s, s).transpose(0, 1)[None].to(ctl.device)
            scene_lat = self.ae.encode(self._to_tensor(current[None]))[:, :, 0]
            ctl_lat = self.ae.encode(ctl)
            t_lat = ctl_lat.shape[2]
            scene_c = scene_channels(scene_latents(self.model.config, scene_lat, torch.from_numpy(K), rel[None]), t_lat,
                                     every_frame=self.model.config.scene_every_frame)
            cond = Conditioning(control=ctl_lat, scene=scene_c, rays=rays)
            noise = torch.randn(ctl_lat.shape, generator=g).to(ctl.device)
            lat = euler_sample(self.model, noise, cond, steps=steps, guidance_hands=guidance_hands,
                               guidance_camera=guidance_camera)
            guide = None
            if photo:
                warped = warp_image(self._to_tensor(scene[None])[:, :, 0], torch.from_numpy(K), rel[None],
                                    self.ae.config.guide_warp_depth)
                guide = composite_guide(warped, ctl)  # [1, 6, T, S, S]
            video = self.ae.decode(lat, guide)[0].clamp(-1, 1).add(1).mul(127.5).round().byte()
            frames = video.permute(1, 2, 3, 0).cpu().numpy()
            out.extend(frames[1:])
            current = scene if photo else frames[-1]
            start = stop - 1
        return np.stack(out[:n])


def load_gestures(gestures: str | Path, size: int, clip_index: int = 0, camera: str | Path | None = None,
                  max_frames: int | None = None) -> dict[str, Any]:
    """Gestures -> ``control [T, S, S, 3]``, ``c2w``, ``K`` (and ``video`` for clips) at model resolution."""
    path = Path(gestures)
    if path.is_dir():
        from hand2world.data import ClipDataset

        item = ClipDataset(path, keys=("video", "control", "K", "c2w"))[clip_index]
    elif path.suffix == ".npz":
        item = dict(np.load(path))
    else:
        item = _track_video(path, size, max_frames)
    K = np.asarray(item.get("K", intrinsics_from_fov(60.0, *item["control"].shape[1:3]).numpy()), np.float32)
    control, K2 = fit_square(item["control"][:max_frames], size, K)
    out = {"control": control, "K": K2, "c2w": item.get("c2w")}
    if "video" in item:
        out["video"] = fit_square(item["video"][:max_frames], size, K)[0]
    if camera is not None:
        out["c2w"] = np.load(camera).astype(np.float32)
    if out["c2w"] is not None:
        out["c2w"] = np.asarray(out["c2w"], np.float32)[: len(control)]
        if len(out["c2w"]) < len(control):
            raise ValueError(f"camera trajectory has {len(out['c2w'])} poses for {len(control)} frames")
    return out


def _track_video(path: Path, size: int, max_frames: int | None) -> dict[str, Any]:
    """Track, fit and render a gesture video with the Foundation path (MediaPipe -> fit -> control)."""
    from hand2world.conditioning import ControlConfig, ControlPipeline
    from hand2world.io import iter_frames, video_info
    from hand2world.tracking import HandTracker

    fps = video_info(path)["fps"] or 30.0
    pipeline = ControlPipeline(ControlConfig(height=size, width=size))
    controls, frames = [], []
    with HandTracker(mode="video") as tracker:
        for i, rgb in enumerate(iter_frames(path, max_frames)):
            h, w = rgb.shape[:2]
            side = min(h, w)
            square = np.ascontiguousarray(rgb[(h - side) // 2:(h - side) // 2 + side,
                                              (w - side) // 2:(w - side) // 2 + side])
            hands = tracker.detect(square, timestamp_ms=int(round(i * 1000 / fps)))
            controls.append(pipeline.process(hands, t=i / fps).control)
            frames.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))
    return {"control": np.stack(controls), "K": pipeline.K, "first_frame": frames[0]}


def run_generate(checkpoint: str, gestures: str, out: str, scene: str | None = None, camera: str | None = None,
                 steps: int = TEACHER_STEPS, guidance_hands: float = 1.0, guidance_camera: float = 1.0, seed: int = 0,
                 max_frames: int | None = None, clip_index: int = 0) -> dict[str, Any]:
    """The ``generate`` command: writes ``out`` (MP4, generated | control [| ground truth])."""

    sampler = TeacherSampler.from_checkpoint(checkpoint)
    g = load_gestures(gestures, sampler.size, clip_index, camera, max_frames)
    scene_rgb = _scene_image(scene, g, sampler.size)
    t0 = time.perf_counter()
    frames = sampler.generate(scene_rgb, g["control"], g["c2w"], g["K"], steps=steps, guidance_hands=guidance_hands,
                              guidance_camera=guidance_camera, seed=seed)
    wall = time.perf_counter() - t0
    _write_panels(out, frames, g)
    return {"out": str(out), "frames": len(frames), "size": sampler.size, "seconds": round(wall, 2),
            "seconds_per_frame": round(wall / max(len(frames) - 1, 1), 3)}


def _scene_image(scene: str | None, g: dict[str, Any], size: int) -> np.ndarray:
    """The scene frame: the ``--scene`` photo fitted to ``size`` (with the gestures' ``K``), else the clip's frame 0."""
    from hand2world.io import read_image

    if scene is not None:
        return fit_square(read_image(scene)[None], size, g["K"])[0][0]
    if "video" in g:
        return g["video"][0]
    raise ValueError("--scene is required unless --gestures is a clip with video")


def _write_panels(out: str | Path, frames: np.ndarray, g: dict[str, Any], fps: float = 8.0) -> None:
    """MP4 of generated | control (| ground truth) per frame."""
    from hand2world.io import VideoWriter

    with VideoWriter(out, fps=fps) as writer:
        for i, frame in enumerate(frames):
            panels = [frame, g["control"][i]] + ([g["video"][i]] if "video" in g else [])
            writer.write(np.concatenate(panels, axis=1))


def run_generate_student(student: str, gestures: str, out: str, scene: str | None = None, camera: str | None = None,
                         steps: int | None = None, seed: int = 0, max_frames: int | None = None, clip_index: int = 0,
                         device: str = "cpu") -> dict[str, Any]:
    """``generate`` with a student (the default): the causal student streams the gestures through
    ``StreamingGenerator``.

    Frame 0 is the scene (pose ``c2w[0]``); frames 1.. are generated block by block from the controls
    and poses 1.. (a trailing partial block is dropped). Same MP4 layout as the teacher path.
    """
    from hand2world.stream import StreamingGenerator

    gen = StreamingGenerator.from_pretrained(student, device, steps=steps, seed=seed)
    if gen.height != gen.width:
        raise ValueError(f"generate with a student needs a square student resolution, got {gen.height}x{gen.width}")
    g = load_gestures(gestures, gen.height, clip_index, camera, max_frames)
    scene_rgb = _scene_image(scene, g, gen.height)
    n = len(g["control"])
    c2w = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)) if g["c2w"] is None else g["c2w"]
    fpb = gen.config.frames_per_block
    n_gen = (n - 1) // fpb * fpb
    if n_gen < n - 1:
        log.warning("dropping %d trailing frames (blocks of %d frames)", n - 1 - n_gen, fpb)
    t0 = time.perf_counter()
    gen.start(scene_rgb, g["K"], scene_c2w=c2w[0])
    frames, step_ms = [scene_rgb], []
    for s in range(1, 1 + n_gen, fpb):
        t1 = time.perf_counter()
        frames.extend(gen.step(g["control"][s:s + fpb], c2w[s:s + fpb]))
        step_ms.append((time.perf_counter() - t1) * 1e3)
    wall = time.perf_counter() - t0
    frames = np.stack(frames)
    _write_panels(out, frames, g)
    return {"out": str(out), "frames": len(frames), "size": gen.height, "seconds": round(wall, 2),
            "steps": gen.stream.steps, "block": fpb,
            "fps": round(n_gen / max(sum(step_ms) / 1e3, 1e-9), 2),
            "step_ms_median": round(float(np.median(step_ms)), 1) if step_ms else None}


def _cmd_generate(args: argparse.Namespace) -> int:
    if args.checkpoint and args.student:
        raise ValueError("give either --checkpoint (teacher) or --student (causal student), not both")
    if args.checkpoint:
        stats = run_generate(checkpoint=args.checkpoint, scene=args.scene, gestures=args.gestures, out=args.out,
                             camera=args.camera, steps=args.steps or TEACHER_STEPS,
                             guidance_hands=args.guidance_hands, guidance_camera=args.guidance_camera, seed=args.seed,
                             max_frames=args.max_frames, clip_index=args.clip_index)
    else:
        stats = run_generate_student(args.student or DEFAULT_STUDENT, args.gestures, args.out, scene=args.scene,
                                     camera=args.camera, steps=args.steps, seed=args.seed, max_frames=args.max_frames,
                                     clip_index=args.clip_index, device=args.device)
    print(json.dumps(stats, indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``generate`` (the teacher with ``--checkpoint``, else a causal student: ``--student``, default the
    shipped ``weights/default``)."""
    p = sub.add_parser("generate", help="scene photo + gestures -> generated egocentric video (MP4: generated | "
                                        "control); the shipped student unless --checkpoint/--student")
    p.add_argument("--checkpoint", default=None, help="teacher run/checkpoint folder or shipped name (Euler sampling)")
    p.add_argument("--student", default=None,
                   help=f"causal student folder or shipped name, streamed with StreamingGenerator (default "
                        f"{DEFAULT_STUDENT!r} when no --checkpoint is given)")
    p.add_argument("--scene", help="scene image (default: the first frame of the gesture clip)")
    p.add_argument("--gestures", required=True, help="gesture video (tracked + fitted + rendered) or a clip folder")
    p.add_argument("--clip-index", type=int, default=0, help="clip index when --gestures is a ClipDataset folder")
    p.add_argument("--camera", help="optional camera trajectory .npy [T, 4, 4] (camera-to-world)")
    p.add_argument("--out", required=True, help="output MP4 (generated | control side by side)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (teacher: default {TEACHER_STEPS}; student: its own few-step count)")
    p.add_argument("--guidance-hands", type=float, default=1.0, help="teacher only")
    p.add_argument("--guidance-camera", type=float, default=1.0, help="teacher only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--device", default="cpu", help="torch device of the student")
    p.set_defaults(func=_cmd_generate)
