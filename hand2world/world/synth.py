"""Clip synthesis: scene + head motion + scripted hands + contact dynamics -> rendered clips with ground truth.

Design choices:
- A clip is a pure function of ``(seed, index)`` and the run's settings: what happens (scene,
  head, hands) is drawn from ``numpy.random.default_rng([seed, index])``, how it looks
  (``look``) from a stream of its own; torch runs single-threaded while posing hands, the
  rasteriser is deterministic and the shard writer fixes zip timestamps, so the same seed
  gives the same bytes whatever the number of workers.
- Every clip carries its scene photo (``scene``): the first camera's view with the objects at
  their first poses, rendered before any hand or forearm is added, so it shows neither them
  nor their shadows (what a live user's photo of the scene shows).
- Forearms are on by default (``WorldSettings.arms``); they are scene meshes (they occlude and
  cast shadows) and never part of the hand labels.
- Work is split by shard (``shard_size`` clips, default 50): a worker makes a whole shard and
  writes it atomically, so an interrupted run resumes by skipping complete shards. The run's
  settings are recorded in ``world.json``; resuming with different settings (the appearance
  ``style`` included) is refused; a setting that a dataset's ``world.json`` predates takes its
  ``LEGACY_SETTINGS`` value.
- Each worker process holds one ``WorldRenderer`` (one EGL context and framebuffer) and one
  ``HandRig`` for its whole life; workers are spawned (a fresh process per worker, no forked
  GL or torch state) and run llvmpipe, torch and OpenCV on one thread each.
- A worker that dies ends the run with ``WorkerPoolError`` (a ``ProcessPoolExecutor``, which
  breaks, rather than a ``multiprocessing.Pool``, which respawns dead workers forever): spawned
  workers re-import the main module, so a script on stdin cannot start them, and says so.
- Per clip the hands of all frames are posed in one batched LBS call per hand, vertex
  normals in one NumPy pass; per frame one GL scene pass reads back RGB + hand id + depth,
  a hands-only pass gives the full-hand mask, and ``render_control`` draws the control image
  from the full hand meshes (nothing occludes it).
- Hand parameters are stored in camera coordinates per frame: for the open model, whose
  wrist is its origin, ``global_orient_cam = R_w2c R_world`` and ``transl_cam = w2c(wrist)``
  reproduce the same mesh in the camera frame.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from hand2world.data.clips import MAX_OBJECTS, actions_from, shard_name, write_index, write_shard
from hand2world.geometry import matrix_to_axis_angle
from hand2world.hands.skeleton import SIDES
from hand2world.render import render_control
from hand2world.world.actions import FREE_SPACE_ACTIONS, sample_script
from hand2world.world.dynamics import simulate
from hand2world.world.gl import WorldRenderer
from hand2world.world.look import CAMERA_STREAM, LOOK_STREAM, sample_look
from hand2world.world.meshes import Mesh, forearm_mesh, vertex_normals
from hand2world.world.photos import photo_pool, pool_digest
from hand2world.world.rig import HandRig, PosedHand
from hand2world.world.scene import head_trajectory, sample_scene

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_FPS", "WorkerPoolError", "WorldSettings", "make_clip", "synthesize"]

DEFAULT_FPS = 16.0
CONFIG = "world.json"
#: appearance version: 1 fixed skin colours and light ranges; 2 ``look`` (skin texture, light, soft shadows);
#: 3 the same with a camera's white balance and real photographs on surfaces (``photos``); 4 smooth soft shadows
#: (fixed 16-tap PCF with a slope-scaled bias, at most 0.15 rad of softness), fewer and fainter palm creases; 5 a
#: camera (lens blur, vignette, sensor noise); 6 forearms whose rim stays inside the wrist
STYLE = 6
_TABLE_CLEARANCE = 0.002  # m: hands are lifted so no vertex goes below this above the table
_WRIST_BAND = 0.015  # m: vertices this close to the hand mesh's proximal end form its wrist section


@dataclass(frozen=True)
class WorldSettings:
    """What a synthetic dataset is a function of (besides the clip index)."""

    frames: int = 33
    size: int = 128
    seed: int = 0
    fps: float = DEFAULT_FPS
    split: str = "train"
    shard_size: int = 50
    arms: bool = True  # draw a forearm on each hand (``_forearm``)
    photos: bool = True  # real photographs on surfaces (``photos.photo_pool``; none installed: procedural only)
    style: int = STYLE  # appearance version (``STYLE``): clips of another style are never mixed into a dataset


#: values a dataset whose ``world.json`` predates a setting was made with
LEGACY_SETTINGS: dict[str, object] = {"arms": False, "style": 1, "photos": False, "photo_pool": ""}


class WorkerPoolError(RuntimeError):
    """The worker pool lost a process (e.g. workers that cannot start): raised at once, never respawned."""


def mask_scale(size: int) -> int:
    """Coverage sub-samples per pixel side of the hand masks: 5 up to 128 px, 3 above (at least 640
    samples across the image either way; an odd count keeps the pixel centre among them)."""
    return 5 if size <= 128 else 3


class _Engine:
    """Per-process state: the GL renderer (one context) and the hand rig."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.renderer = WorldRenderer(size, size, mask_scale=mask_scale(size))
        self.rig = HandRig()


_ENGINE: _Engine | None = None


def _engine(size: int) -> _Engine:
    global _ENGINE
    if _ENGINE is None or _ENGINE.size != size:
        if _ENGINE is not None:
            _ENGINE.renderer.release()
        _ENGINE = _Engine(size)
    return _ENGINE


def _lift_above_table(hand: PosedHand) -> PosedHand:
    """Shift each frame up so the hand does not go through the table top (``z = 0``)."""
    lift = np.maximum(_TABLE_CLEARANCE - hand.vertices[..., 2].min(axis=1), 0.0)  # [T]
    hand.vertices[..., 2] += lift[:, None]
    hand.joints[..., 2] += lift[:, None]
    hand.wrist = hand.wrist + lift[:, None] * [0.0, 0.0, 1.0]
    return hand


def _forearm(hand: PosedHand, model_frame: np.ndarray, eye: np.ndarray) -> tuple[Mesh, np.ndarray]:
    """A forearm for ``hand``: its mesh (``forearm_mesh``) and per-frame object-to-world poses ``[T, 4, 4]``.

    The tube starts just inside the wrist end of the hand mesh (the centroid of the vertices within
    ``_WRIST_BAND`` of the proximal end, 0.5 cm back toward the elbow), 0.85 times that end's width
    and thickness (measured in the first frame), so its rim stays inside the wrist instead of
    poking out over the palm or the back of the hand (a longer, wider overlap hid 8 % of the
    visible hand pixels, 4.7 % now, mostly where perspective puts the arm in front), and runs to an
    elbow behind, below and beside the eye (out of view; the tube stands for forearm and upper arm),
    bent toward the hand's own backward direction when that points the same way, so the wrist does
    not kink.
    Derived from the posed hand alone (no random draws), so scenes and scripts stay as they were.
    """
    f = hand.rotation @ model_frame[:, 0]  # [T, 3] finger direction, palm normal, lateral (world)
    n = hand.rotation @ model_frame[:, 1]
    lat = np.cross(f, n)
    rel = hand.vertices - hand.joints[:, :1]  # [T, V, 3]
    along = np.einsum("tvi,ti->tv", rel, f)
    band = along <= along.min(axis=1, keepdims=True) + _WRIST_BAND  # [T, V]
    start = (np.einsum("tv,tvi->ti", band, hand.vertices) / band.sum(1, keepdims=True)) - 0.005 * f
    end0 = hand.vertices[0][band[0]] - start[0]
    half_width = 0.85 * float(np.abs(end0 @ lat[0]).max())
    half_thickness = 0.85 * float(np.abs(end0 @ n[0]).max())
    sign = -1.0 if hand.side == "left" else 1.0
    elbow = np.array([eye[0] + sign * 0.17, eye[1] - 0.2, eye[2] - 0.3])  # behind and below the eye: out of view
    to_elbow = elbow - start
    length = float(np.linalg.norm(to_elbow, axis=1).max()) + 0.05
    d = to_elbow / np.linalg.norm(to_elbow, axis=1, keepdims=True)
    d = d - 0.5 * np.maximum(-(d * f).sum(1, keepdims=True), 0.0) * f  # bend toward the hand's backward direction
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    y = n - (n * d).sum(1, keepdims=True) * d
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-9)
    poses = np.tile(np.eye(4), (len(d), 1, 1))
    poses[:, :3, 0], poses[:, :3, 1], poses[:, :3, 2], poses[:, :3, 3] = np.cross(y, d), y, d, start
    return forearm_mesh(max(half_width, 0.015), max(half_thickness, 0.01), min(length, 1.5)), poses


def _skin_coords(hand: PosedHand, normals0: np.ndarray, model_frame: np.ndarray) -> np.ndarray:
    """Texture coordinates ``[V, 6]`` that move with the skin: the first frame's surface (positions,
    normals) in the hand's own frame, axes (finger direction, palm normal, lateral) as in ``rig``."""
    R0 = hand.rotation[0]
    pos = (hand.vertices[0] - hand.wrist[0]) @ R0 @ model_frame  # world -> model frame -> (f, n, lateral)
    nrm = normals0 @ R0 @ model_frame
    return np.concatenate([pos, nrm], axis=1).astype(np.float32)


def make_clip(index: int, settings: WorldSettings, timings: dict[str, float] | None = None) -> dict:
    """Synthesize clip ``index`` of the dataset described by ``settings``.

    Returns:
        A clip dict in the ``hand2world.data`` format (arrays plus ``meta``).
    """
    timings = {} if timings is None else timings
    tic = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tic
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - tic
        tic = now

    T, S, fps = settings.frames, settings.size, settings.fps
    engine = _engine(S)
    rng = np.random.default_rng([settings.seed, index])
    scene = sample_scene(rng)
    pool = photo_pool() if settings.photos else None
    look = sample_look(np.random.default_rng([settings.seed, index, LOOK_STREAM]), scene, pool)
    K = scene.K(S, S)
    c2w, moving = head_trajectory(rng, scene.base_c2w(), T, fps)
    script = sample_script(rng, scene, engine.rig, T / fps)
    times = np.arange(T) / fps
    hands: list[PosedHand] = []
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for track in script.tracks:
            pos, f, n, anat = track.sample(times)
            R = engine.rig.rotation(track.side, f, n)
            hands.append(_lift_above_table(engine.rig.pose(track.side, pos, R, anat, track.betas)))
    finally:
        torch.set_num_threads(prev_threads)
    lap("hands")
    object_poses = simulate(scene.objects, hands, script, fps)
    lap("dynamics")

    # ---------------------------------------------------------------- render
    w2c = np.linalg.inv(c2w)
    r = engine.renderer
    r.set_camera(K)
    r.set_light(look.light_dir, look.light_color, look.ambient, ground=look.ground, softness=look.softness)
    used = sorted({m.photo for m in [*look.surfaces.values(), *look.objects.values()] if m.photo})
    for photo in pool.photos if pool is not None else ():
        if photo.name in used:
            r.set_photo(photo.name, photo.rgb)  # uploaded once per worker
    for (mesh, material, pose), role in zip(scene.surfaces, scene.surface_roles, strict=True):
        r.set_pose(r.add_mesh(*mesh, look.surfaces.get(role, material), casts_shadow=False), pose)
    handles = [r.add_mesh(*o.mesh(), look.objects.get(i, o.material)) for i, o in enumerate(scene.objects)]
    try:
        # the scene photo: the first camera, objects where they start, before any hand or arm exists
        for i, handle in enumerate(handles):
            r.set_pose(handle, object_poses[i, 0])
        cam_rng = np.random.default_rng([settings.seed, index, CAMERA_STREAM])  # sensor noise: scene, then frames
        scene_rgb = look.camera.apply(r.render(w2c[0])[0], cam_rng)
        normals = []
        arms = []  # (handle, poses [T, 4, 4]): forearms are scene meshes (occluders, shadow casters), not hand pixels
        for hand in hands:
            faces = engine.rig.faces[hand.side]
            nrm = vertex_normals(hand.vertices, faces)
            r.add_hand(SIDES.index(hand.side) + 1, hand.vertices.shape[1], faces, look.skin,
                       tex=_skin_coords(hand, nrm[0], engine.rig.model_frames[hand.side]))
            normals.append(nrm)
            if settings.arms:
                arm_mesh, arm_poses = _forearm(hand, engine.rig.model_frames[hand.side], scene.eye)
                arms.append((r.add_mesh(*arm_mesh, look.skin), arm_poses))
    except BaseException:
        r.clear_scene()
        raise
    video = np.empty((T, S, S, 3), np.uint8)
    control = np.empty((T, S, S, 3), np.uint8)
    depth = np.empty((T, S, S), np.float32)
    hand_mask = np.empty((T, S, S), bool)
    visible = np.empty((T, S, S), bool)
    cam_verts = [np.einsum("tij,tvj->tvi", w2c[:, :3, :3], h.vertices) + w2c[:, None, :3, 3] for h in hands]
    lap("setup")
    try:
        for t in range(T):
            for i, handle in enumerate(handles):
                r.set_pose(handle, object_poses[i, t])
            for handle, arm_poses in arms:
                r.set_pose(handle, arm_poses[t])
            for hand, nrm in zip(hands, normals, strict=True):
                r.update_hand(SIDES.index(hand.side) + 1, hand.vertices[t], nrm[t])
            rgb, z, vis, full = r.render(w2c[t])
            video[t], depth[t], visible[t], hand_mask[t] = look.camera.apply(rgb, cam_rng), z, vis > 0, full > 0
            lap("render")
            meshes = [SimpleNamespace(vertices=v[t], faces=engine.rig.faces[h.side], side=h.side)
                      for v, h in zip(cam_verts, hands, strict=True)]
            control[t] = render_control(meshes, K, S, S)
            lap("control")
    finally:
        r.clear_scene()

    # ---------------------------------------------------------------- ground truth
    joints3d = np.full((T, 2, 21, 3), np.nan, np.float32)
    params = np.full((T, 2, 61), np.nan, np.float32)
    for hand in hands:
        s = SIDES.index(hand.side)
        joints3d[:, s] = np.einsum("tij,tvj->tvi", w2c[:, :3, :3], hand.joints) + w2c[:, None, :3, 3]
        R_cam = w2c[:, :3, :3] @ hand.rotation
        params[:, s, :3] = matrix_to_axis_angle(torch.as_tensor(R_cam)).numpy()
        params[:, s, 3:48] = hand.hand_pose
        params[:, s, 48:58] = hand.betas
        params[:, s, 58:] = np.einsum("tij,tj->ti", w2c[:, :3, :3], hand.wrist) + w2c[:, :3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        uvw = joints3d.astype(np.float64) @ K.T
        joints2d = (uvw[..., :2] / uvw[..., 2:]).astype(np.float32)
    n_obj = len(scene.objects)
    poses = np.full((T, MAX_OBJECTS, 4, 4), np.nan, np.float32)
    info = np.zeros((MAX_OBJECTS, 8), np.float32)
    if n_obj:
        poses[:, :n_obj] = object_poses.transpose(1, 0, 2, 3)
    for i, o in enumerate(scene.objects):
        info[i] = [o.kind_id, *o.size, *o.material.color_a, 1.0]
    moved = np.linalg.norm(object_poses[:, -1, :3, 3] - object_poses[:, 0, :3, 3], axis=-1) if n_obj else np.zeros(0)
    path = (np.linalg.norm(np.diff(object_poses[:, :, :3, 3], axis=1), axis=-1).sum(1) if n_obj else np.zeros(0))
    meta = {
        "source": "world", "action": script.action, "contact": script.contact,
        "free_space": script.action in FREE_SPACE_ACTIONS, "target": script.target,
        "target_moved": float(moved[script.target]) if script.target >= 0 else 0.0,
        "objects_path": float(path.sum()), "head_moving": bool(moving), "num_hands": len(hands),
        "primary_side": script.tracks[0].side, "num_objects": n_obj, "fps": fps, "frames": T, "size": S,
        "split": settings.split, "seed": settings.seed, "style": settings.style, "skin_tone": look.tone,
        "light_kelvin": look.kelvin, "shadow_softness": look.softness, "photos": ",".join(used),
        **{k: v for k, v in script.extra.items() if isinstance(v, str | int | float | bool)},
    }
    present = np.array([s in {h.side for h in hands} for s in SIDES])
    lap("ground_truth")
    return {
        "video": video, "scene": scene_rgb, "control": control, "K": K.astype(np.float32),
        "c2w": c2w.astype(np.float32), "joints3d": joints3d, "joints2d": joints2d, "hand_mask": hand_mask,
        "visible_mask": visible,
        "depth": depth, "actions": actions_from(c2w, joints3d), "hand_params": params, "hands_present": present,
        "object_poses": poses, "object_info": info, "meta": meta,
    }


def _shard_range(k: int, clips: int, shard_size: int) -> tuple[int, int]:
    return k * shard_size, min((k + 1) * shard_size, clips)


def _shard_len(k: int, clips: int, shard_size: int) -> int:
    lo, hi = _shard_range(k, clips, shard_size)
    return hi - lo


def _make_shard(task: tuple[str, int, int, WorldSettings]) -> tuple[int, int, dict[str, float]]:
    out, k, clips, settings = task
    lo, hi = _shard_range(k, clips, settings.shard_size)
    timings: dict[str, float] = {}
    made = [make_clip(i, settings, timings) for i in range(lo, hi)]
    t0 = time.perf_counter()
    write_shard(out, k, made, first=lo)
    timings["write"] = time.perf_counter() - t0
    return k, hi - lo, timings


def _init_worker() -> None:
    os.environ["LP_NUM_THREADS"] = "1"  # before the worker's GL context exists
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)


def _complete(path: Path, expected: int) -> bool:
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(n.endswith("/meta.json") for n in zf.namelist()) == expected
    except zipfile.BadZipFile:
        return False


def synthesize(out_dir: str | os.PathLike, clips: int, frames: int = 33, size: int = 128, seed: int = 0,
               workers: int = 1, *, fps: float = DEFAULT_FPS, split: str = "train", shard_size: int = 50,
               progress: bool = True, arms: bool = True, photos: bool = True) -> dict:
    """Write ``clips`` synthetic clips to ``out_dir`` (resumable; same seed, same bytes).

    Args:
        out_dir: dataset folder (``hand2world.data`` format).
        clips, frames, size: number of clips, frames per clip, square frame size in pixels.
        seed: the run's seed; clip ``i`` depends only on ``(seed, i)`` and the settings.
        workers: processes (each renders with one CPU thread).
        fps, split, shard_size: frame rate, split label written to every clip, clips per shard.
        progress: show a tqdm bar.
        arms: draw forearms (hand masks, joints and the control render stay the hands' alone).
        photos: texture surfaces with real photographs (``photos.photo_pool``; procedural if none).

    Returns:
        ``{"index": <index.json>, "made": clips made now, "skipped": clips already there,
        "seconds": wall time, "timings": summed seconds per stage}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = WorldSettings(frames, size, seed, fps, split, shard_size, arms, photos=photos)
    # what the clips are a function of: the settings and, with photos, the texture pool's digest
    config = asdict(settings) | {"photo_pool": pool_digest() if photos else ""}
    cfg_path = out / CONFIG
    if cfg_path.is_file():
        # a setting added later has its legacy value in a dataset that does not record it
        old = {**LEGACY_SETTINGS, **json.loads(cfg_path.read_text())}
        if old != config:
            raise ValueError(f"{out} holds clips made with {old}; asked for {config} (use another folder)")
    else:
        cfg_path.write_text(json.dumps(config, indent=1, sort_keys=True))
    shards = (clips + shard_size - 1) // shard_size
    todo = [k for k in range(shards) if not _complete(out / shard_name(k), _shard_len(k, clips, shard_size))]
    skipped = clips - sum(_shard_len(k, clips, shard_size) for k in todo)
    for k in range(shards, shards + 10**6):  # a smaller run than before: drop shards beyond it
        path = out / shard_name(k)
        if not path.exists():
            break
        path.unlink()
    timings: dict[str, float] = {}
    tasks = [(str(out), k, clips, settings) for k in todo]
    t0 = time.perf_counter()
    bar = tqdm(total=clips, initial=skipped, unit="clip", desc="world synth", disable=not progress)
    def collect(result: tuple[int, int, dict[str, float]]) -> None:
        _, n, tm = result
        for key, v in tm.items():
            timings[key] = timings.get(key, 0.0) + v
        bar.update(n)

    try:
        if workers <= 1:
            for task in tasks:
                collect(_make_shard(task))
        elif tasks:
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                     initializer=_init_worker) as pool:
                futures = [pool.submit(_make_shard, task) for task in tasks]
                try:
                    for future in as_completed(futures):
                        collect(future.result())
                except BrokenProcessPool as e:
                    raise WorkerPoolError(
                        f"world synth: a worker process died ({e}). Complete shards are kept; a rerun resumes. "
                        "If it died at start: workers are spawned and re-import the main module, so a script fed "
                        "on stdin or typed into an interactive session cannot start them. Run it from a file "
                        "(under `if __name__ == '__main__':`), through `hand2world world synth`, or with "
                        "workers=1.") from e
                finally:
                    for future in futures:
                        future.cancel()
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    index = write_index(out, extra={"world": config})
    log.info("world synth: %d clips in %s (%d made in %.1f s, %d already there)", index["num_clips"], out,
             clips - skipped, seconds, skipped)
    return {"index": index, "made": clips - skipped, "skipped": skipped, "seconds": seconds, "timings": timings}
