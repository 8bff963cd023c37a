"""Contact dynamics: hands push objects, grasped objects follow the hand, loose objects fall and rest.

Design choices (kinematic hands, simple rigid objects, one step per frame):
- Hands are kinematic (their motion is scripted); objects react. Each object is a solid of
  its footprint (a box, or a vertical cylinder for round kinds) from the table up to its height.
- Pushing: every frame, the hand's vertices (every third) inside an object's solid are
  resolved by moving the object horizontally, deepest point first, along the shallowest way
  out (a box's nearest side face, a cylinder's radius), a few iterations. The displacement
  over the frame is the object's velocity; once contact ends the object slides on with that
  velocity and Coulomb friction (``mu * g`` deceleration) until it stops: pushed objects slide.
- Grasping: between the script's attach and release times the target follows the hand rigidly
  (its pose relative to the hand's wrist frame is frozen at the attach frame); the hand
  passes through it while closing, so the grasp target is exempt from pushes.
- Support: a loose object above the table falls under gravity (no bounce) and then rests on
  it; nothing sinks below ``z = 0``. Objects do not collide with each other (a limitation).
"""

from __future__ import annotations

import numpy as np

from hand2world.world.actions import Script
from hand2world.world.rig import PosedHand
from hand2world.world.scene import SceneObject

__all__ = ["simulate"]

GRAVITY = 9.81
MU = 0.45
MAX_SPEED = 0.8  # m/s: a deep one-frame penetration does not launch an object
_ITERS = 4


def _resolve(obj: SceneObject, pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Horizontal world displacement ``[3]`` that moves ``obj`` (at ``pose``) off the hand ``points [N, 3]``."""
    total = np.zeros(3)
    R, t = pose[:3, :3], pose[:3, 3]
    local = (points - t) @ R  # [N, 3] object frame
    h = obj.height
    local = local[(local[:, 2] > 0.0) & (local[:, 2] < h)]
    if local.shape[0] == 0:
        return total
    shift = np.zeros(2)  # accumulated object motion in the object frame (xy)
    for _ in range(_ITERS):
        p = local[:, :2] - shift
        if obj.kind == "box":
            hx, hy = obj.size[0] / 2, obj.size[1] / 2
            dx, dy = hx - np.abs(p[:, 0]), hy - np.abs(p[:, 1])
            inside = (dx > 0) & (dy > 0)
            if not inside.any():
                break
            depth = np.minimum(dx, dy)
            i = int(np.argmax(np.where(inside, depth, -1)))
            if dx[i] < dy[i]:
                shift[0] -= np.sign(p[i, 0]) * (dx[i] + 1e-4)
            else:
                shift[1] -= np.sign(p[i, 1]) * (dy[i] + 1e-4)
        else:
            r = obj.size[0] / 2
            dist = np.linalg.norm(p, axis=1)
            inside = dist < r
            if not inside.any():
                break
            i = int(np.argmax(np.where(inside, r - dist, -1)))
            direction = p[i] / max(dist[i], 1e-6)
            shift -= direction * (r - dist[i] + 1e-4)
    total[:2] = R[:2, :2] @ shift  # objects stand upright: their rotation is a yaw
    return total


def simulate(objects: list[SceneObject], hands: list[PosedHand], script: Script, fps: float) -> np.ndarray:
    """Object poses over the clip.

    Args:
        objects: the scene's objects (initial ``pose`` each).
        hands: the posed hands (world frame), in ``script.tracks`` order.
        script: supplies the grasp target and its attach/release times.
        fps: frame rate (the step is one frame).

    Returns:
        ``[N_obj, T, 4, 4]`` object-to-world poses.
    """
    frames = hands[0].vertices.shape[0] if hands else 0
    dt = 1.0 / fps
    poses = np.tile(np.stack([o.pose for o in objects])[:, None], (1, frames, 1, 1)) if objects else \
        np.zeros((0, frames, 4, 4))
    if not objects:
        return poses
    times = np.arange(frames) / fps
    grasp = script.grasp_track >= 0 and script.target >= 0
    if grasp:
        attached = (times >= script.attach_t) & (times < script.release_t)
        hand = hands[script.grasp_track]
        hand_T = np.tile(np.eye(4), (frames, 1, 1))
        hand_T[:, :3, :3], hand_T[:, :3, 3] = hand.rotation, hand.wrist
    points = [h.vertices[:, ::3] for h in hands]
    current = [o.pose.copy() for o in objects]
    velocity = np.zeros((len(objects), 3))
    rel = None
    for t in range(frames):
        for i, obj in enumerate(objects):
            pose = current[i]
            if grasp and i == script.target and attached[t]:
                if rel is None:
                    rel = np.linalg.inv(hand_T[t]) @ pose
                pose = hand_T[t] @ rel
                pose[2, 3] = max(pose[2, 3], 0.0)  # the table stops a carried object (it slips in the hand)
                velocity[i] = 0.0
            else:
                if not (grasp and i == script.target):
                    push = sum((_resolve(obj, pose, p[t]) for p in points), np.zeros(3))
                else:
                    push = np.zeros(3)
                pose = pose.copy()
                if np.any(push):
                    pose[:3, 3] += push
                    v = push[:2] / dt
                    velocity[i, :2] = v * min(1.0, MAX_SPEED / max(np.linalg.norm(v), 1e-9))
                else:
                    speed = np.linalg.norm(velocity[i, :2])
                    if speed > 0:
                        new = max(speed - MU * GRAVITY * dt, 0.0)
                        pose[:2, 3] += velocity[i, :2] * (speed + new) / 2 / speed * dt
                        velocity[i, :2] *= new / speed
                if pose[2, 3] > 0.0:  # unsupported: fall
                    velocity[i, 2] -= GRAVITY * dt
                    pose[2, 3] = max(pose[2, 3] + velocity[i, 2] * dt, 0.0)
                if pose[2, 3] <= 0.0:
                    pose[2, 3], velocity[i, 2] = 0.0, 0.0
            current[i] = pose
            poses[i, t] = pose
    return poses
