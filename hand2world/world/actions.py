"""The action library: keyframed hand motions with natural timing.

Actions (``ACTIONS``): contact actions ``push`` and ``grasp`` (grasp-lift-carry-place) move
their target object; ``reach`` (approach an object and stop just short of it, from the near
side or reaching over it to behind it) and ``point`` go near objects without touching them;
``wave``, ``open_close`` and ``gesture`` are free-space gestures above the table that touch
nothing.

Design choices:
- A hand's motion is a list of keys (time, wrist position, finger direction, palm normal,
  articulation; see ``rig``); between keys every quantity follows a minimum-jerk profile
  (``10 s^3 - 15 s^4 + 6 s^5``), the classic model of human reaching, so speeds rise and fall
  smoothly. Directions are interpolated linearly and re-orthonormalised.
- Key times are written at a natural speed and then squeezed uniformly when the action
  would not fit the clip; the action starts at a random offset, the rest of the clip holds.
- Keys aim a meaningful hand point at a target (the grip point for grasps, the palm for
  pushes, a fingertip for reaches) through ``rig`` helpers, so contacts happen where meant.
- Positions are in the world (table) frame, z up (``scene``). Free-space gestures stay in a
  box above every object (wrist 20-30 cm above the table and at least ``FREE_SPACE_CLEARANCE``
  above the tallest object, in front of the objects).
- With probability ``two_hand_prob`` the other hand joins: a free-space gesture of its own
  in free-space clips, an idle drift at the near edge otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hand2world.hands.sampling import ANATOMICAL_RANGES
from hand2world.world.rig import (
    HandRig,
    articulation,
    fingertip_point,
    grip_point,
    palm_point,
)
from hand2world.world.scene import Scene

__all__ = ["ACTIONS", "CONTACT_ACTIONS", "FREE_SPACE_ACTIONS", "HandTrack", "Key", "Script", "sample_script"]

ACTIONS: tuple[str, ...] = ("reach", "push", "grasp", "point", "wave", "open_close", "gesture")
CONTACT_ACTIONS: tuple[str, ...] = ("push", "grasp")
FREE_SPACE_ACTIONS: tuple[str, ...] = ("wave", "open_close", "gesture")
_WEIGHTS = np.array([0.25, 0.28, 0.2, 0.05, 0.06, 0.06, 0.1])
UP = np.array([0.0, 0.0, 1.0])
FREE_SPACE_CLEARANCE = 0.13  # m: free-space gestures keep the wrist this far above the tallest object


@dataclass
class Key:
    """One key: time (s), wrist ``pos [3]``, finger direction ``f [3]``, palm normal ``n [3]``, ``anat [15, 3]``."""

    t: float
    pos: np.ndarray
    f: np.ndarray
    n: np.ndarray
    anat: np.ndarray


@dataclass
class HandTrack:
    """One hand's keys plus its identity: side and shape ``betas [10]`` (its skin is the clip's ``look``)."""

    side: str
    keys: list[Key]
    betas: np.ndarray

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Minimum-jerk interpolation at ``times [T]`` -> ``pos [T,3], f [T,3], n [T,3], anat [T,15,3]``."""
        kt = np.array([k.t for k in self.keys])
        seg = np.clip(np.searchsorted(kt, times, side="right") - 1, 0, len(kt) - 1)
        nxt = np.minimum(seg + 1, len(kt) - 1)
        span = np.maximum(kt[nxt] - kt[seg], 1e-9)
        s = np.clip((times - kt[seg]) / span, 0.0, 1.0)
        s = np.where(nxt == seg, 0.0, s)
        w = (10 * s**3 - 15 * s**4 + 6 * s**5)[:, None]
        out = []
        for name in ("pos", "f", "n", "anat"):
            vals = np.stack([getattr(k, name) for k in self.keys])
            a, b = vals[seg], vals[nxt]
            ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
            out.append(a + (b - a) * ww)
        return out[0], out[1], out[2], out[3]


@dataclass
class Script:
    """What happens in a clip: ``action`` label, ``target`` object (-1: none), hand tracks, and for
    grasps the attach/release times (s) of the grasping track ``grasp_track``."""

    action: str
    target: int
    tracks: list[HandTrack]
    attach_t: float = -1.0
    release_t: float = -1.0
    grasp_track: int = -1
    extra: dict = field(default_factory=dict)

    @property
    def contact(self) -> bool:
        return self.action in CONTACT_ACTIONS


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class _Builder:
    """Builds keys for one hand, turning "put this hand point at that world point" into wrist positions."""

    def __init__(self, rig: HandRig, side: str, rng: np.random.Generator) -> None:
        self.rig, self.side, self.rng = rig, side, rng
        self.keys: list[Key] = []
        self.t = 0.0

    def key(self, dt: float, f: np.ndarray, n: np.ndarray, anat: np.ndarray, wrist: np.ndarray | None = None,
            point: np.ndarray | None = None, local: np.ndarray | None = None) -> Key:
        """Append a key ``dt`` seconds after the previous one; either ``wrist`` or (``point``, ``local``):
        the model-frame point ``local`` lands on world ``point``."""
        self.t += dt
        if wrist is None:
            R = self.rig.rotation(self.side, f, n)
            wrist = point - R @ local
        k = Key(self.t, np.asarray(wrist, float), _unit(np.asarray(f, float)), _unit(np.asarray(n, float)), anat)
        self.keys.append(k)
        return k

    def hold(self, dt: float) -> Key:
        last = self.keys[-1]
        return self.key(dt, last.f, last.n, last.anat, wrist=last.pos)

    def art(self, name: str) -> np.ndarray:
        return articulation(name, self.rng)


def _sign(side: str) -> float:
    return -1.0 if side == "left" else 1.0


def _start(b: _Builder, scene: Scene, free_space: bool = False) -> Key:
    """First key: the hand enters low at the near edge (or already up in free space, clear of every object)."""
    s, rng = _sign(b.side), b.rng
    if free_space:
        floor = max((o.height for o in scene.objects), default=0.0) + FREE_SPACE_CLEARANCE
        pos = np.array([s * rng.uniform(0.05, 0.2), rng.uniform(-0.24, -0.1), max(rng.uniform(0.2, 0.26), floor)])
    else:
        pos = np.array([s * rng.uniform(0.1, 0.2), rng.uniform(-0.33, -0.26), rng.uniform(0.08, 0.14)])
    f = np.array([-s * rng.uniform(0.0, 0.3), 1.0, -0.3])
    return b.key(0.0, f, -UP + 0.2 * rng.normal(size=3), b.art("relaxed"), wrist=pos)


def _sight(scene: Scene, point: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Horizontal unit direction from the viewer's eye to ``point`` (optionally turned by up to ``jitter`` rad)."""
    d = np.array([point[0] - scene.eye[0], point[1] - scene.eye[1], 0.0])
    a = rng.uniform(-jitter, jitter) if rng is not None else 0.0
    c, s = np.cos(a), np.sin(a)
    return _unit(np.array([c * d[0] - s * d[1], s * d[0] + c * d[1], 0.0]))


def _make_tall(scene: Scene, target: int, rng: np.random.Generator) -> None:
    """Stage the scene for an approach from behind: the target becomes a tall box or cylinder (a bottle, a
    carton) as wide as its neighbours allow, so that it hides the hand as such objects do in egocentric footage."""
    obj = scene.objects[target]
    room = min((np.linalg.norm(o.pose[:2, 3] - obj.pose[:2, 3]) - o.radius - 0.01
                for i, o in enumerate(scene.objects) if i != target), default=1.0)
    if obj.kind in ("sphere", "bowl", "cup"):
        obj.kind = "cylinder"
    width = max(obj.size[0], rng.uniform(0.08, 0.12))
    depth = width if obj.kind == "cylinder" else max(obj.size[1], 0.06)
    radius = np.hypot(width, depth) / 2 if obj.kind == "box" else width / 2
    scale = min(1.0, max(room, obj.radius) / radius)  # never into a neighbour, never smaller than before
    obj.size = np.array([width * scale, depth * scale, max(obj.height, rng.uniform(0.12, 0.22))])


def _over(b: _Builder, scene: Scene, target: int, f: np.ndarray, n: np.ndarray, anat: np.ndarray) -> None:
    """Rise above every object, then move over the target (so the path to its far side touches nothing)."""
    top = max(o.height for o in scene.objects) + 0.1
    start = b.keys[-1].pos
    b.key(b.rng.uniform(0.25, 0.4), f, n, anat, wrist=np.array([start[0], start[1], max(start[2], top)]))


def _forward(direction: np.ndarray, tilt: float) -> np.ndarray:
    d = _unit(np.array([direction[0], direction[1], 0.0]))
    return _unit(d - tilt * UP)


def _grasp(b: _Builder, scene: Scene, target: int, script: Script) -> None:
    """Grasp-lift-carry-place: from the side for upright objects (the fingers wrap around the far side,
    hidden by the object, as in egocentric footage), else from above."""
    rng, obj = b.rng, scene.objects[target]
    c = obj.pose[:3, 3]
    grasp_anat, pre = b.art("grasp"), b.art("pregrasp")
    local = grip_point(b.rig, b.side, grasp_anat)
    side_grasp = obj.height >= 0.06 and obj.kind != "sphere" and min(obj.size[:2]) <= 0.09 and rng.random() < 0.8
    if side_grasp:
        # cylindrical grasp: the hand comes from the near side of its own side (right hand: near-right),
        # palm toward the object and away from the viewer, fingers around the far side, thumb on the near side
        sight = _sight(scene, c, 0.25, rng)
        right = np.cross(sight, UP) * _sign(b.side)  # points to the hand's side of the object
        n = _unit(-0.8 * right + 0.6 * sight)
        f = _unit(0.8 * sight + 0.6 * right + 0.15 * UP)
        hold = c + UP * rng.uniform(0.3, 0.5) * obj.height
        approach = hold - n * rng.uniform(0.07, 0.1) + UP * 0.02
    else:
        yaw = rng.uniform(-0.4, 0.4)
        f = _forward(np.array([np.sin(yaw), np.cos(yaw), 0.0]), rng.uniform(0.3, 0.6))
        n = -UP + 0.1 * f
        top = c + UP * obj.height
        hold = top - UP * min(0.02, 0.35 * obj.height)
        approach = top + UP * rng.uniform(0.06, 0.09)
    script.extra["grasp"] = "side" if side_grasp else "top"
    b.key(rng.uniform(0.5, 0.8), f, n, pre, point=approach, local=local)
    b.key(rng.uniform(0.25, 0.4), f, n, pre, point=hold, local=local)
    k = b.key(rng.uniform(0.2, 0.3), f, n, grasp_anat, point=hold, local=local)
    script.attach_t = k.t
    lift = UP * rng.uniform(0.07, 0.14)
    b.key(rng.uniform(0.3, 0.45), f, n, grasp_anat, wrist=k.pos + lift)
    dest = _free_spot(rng, scene, target, c)
    carry = np.array([dest[0] - c[0], dest[1] - c[1], 0.0])
    b.key(rng.uniform(0.45, 0.7), f, n, grasp_anat, wrist=k.pos + lift + carry)
    k = b.key(rng.uniform(0.3, 0.45), f, n, grasp_anat, wrist=k.pos + carry + UP * 0.004)
    script.release_t = k.t + 0.05
    b.key(rng.uniform(0.2, 0.3), f, n, pre, wrist=k.pos + UP * 0.005)
    back = -n if side_grasp else f
    b.key(rng.uniform(0.4, 0.6), f, n, b.art("relaxed"), wrist=k.pos + UP * 0.1 - back * 0.06)
    script.extra["destination"] = dest.tolist()


def _free_spot(rng: np.random.Generator, scene: Scene, target: int, origin: np.ndarray) -> np.ndarray:
    obj = scene.objects[target]
    best, best_gap = origin[:2] + [0.12, 0.0], -np.inf
    for _ in range(30):
        p = np.array([rng.uniform(-0.28, 0.28), rng.uniform(-0.1, 0.26)])
        if not 0.08 <= np.linalg.norm(p - origin[:2]) <= 0.22:
            continue
        gap = min((np.linalg.norm(p - o.pose[:2, 3]) - o.radius - obj.radius
                   for i, o in enumerate(scene.objects) if i != target), default=1.0)
        if gap > best_gap:
            best, best_gap = p, gap
        if gap > 0.02:
            break
    return best


def _push(b: _Builder, scene: Scene, target: int, script: Script) -> None:
    rng, obj = b.rng, scene.objects[target]
    c = obj.pose[:3, 3]
    mode = rng.choice(["forward", "side", "toward"], p=[0.22, 0.18, 0.6])
    if mode == "forward":
        d = _unit(np.array([rng.uniform(-0.3, 0.3), 1.0, 0.0]))
    elif mode == "side":
        d = _unit(np.array([-np.sign(c[0] + 1e-6), rng.uniform(-0.3, 0.3), 0.0]))
    else:  # from behind the object (as the viewer sees it) toward the viewer: the object hides the hand
        d = -_sight(scene, c, 0.2, rng)
        _make_tall(scene, target, rng)
    if mode == "toward":  # fingers across and a little up: the hand stays low, behind the object
        f = _unit(np.cross(d, UP) * _sign(b.side) + 0.4 * UP)
        n = d
    else:
        f = _unit(0.75 * d + 0.65 * UP)
        n = d - 0.3 * UP
    anat = b.art("flat")
    local = palm_point(b.rig, b.side, anat)
    z = UP * max(0.5 * obj.height, 0.035)
    before = c - d * (obj.radius + 0.035) + z
    if mode == "toward":  # reach over the object to its far side first
        _over(b, scene, target, f, n, anat)
        over = c - d * (obj.radius + 0.06) + UP * (obj.height + 0.14)
        b.key(rng.uniform(0.5, 0.7), f, n, anat, point=over, local=local)
        b.key(rng.uniform(0.3, 0.45), f, n, anat, point=before, local=local)
    else:
        b.key(rng.uniform(0.5, 0.8), f, n, anat, point=before, local=local)
    b.hold(rng.uniform(0.05, 0.15))
    dist = rng.uniform(0.07, 0.15)
    k = b.key(dist / rng.uniform(0.15, 0.3), f, n, anat, point=before + d * (dist + 0.035), local=local)
    b.hold(rng.uniform(0.05, 0.15))
    b.key(rng.uniform(0.4, 0.6), f, -UP, b.art("relaxed"), wrist=k.pos - d * 0.08 + UP * 0.1)
    script.extra["push_direction"] = mode


def _reach(b: _Builder, scene: Scene, target: int, script: Script) -> None:
    rng, obj = b.rng, scene.objects[target]
    c = obj.pose[:3, 3]
    if rng.random() < 0.8:  # over the object and down behind it: the object hides the hand
        ray = _sight(scene, c, 0.15, rng)
        _make_tall(scene, target, rng)
        f = _forward(ray, 0.3)
        anat = b.art("relaxed")
        _over(b, scene, target, f, -UP, anat)
        behind = c + ray * (obj.radius + 0.045) + UP * rng.uniform(0.02, 0.04)
        b.key(rng.uniform(0.4, 0.6), f, -UP, anat, wrist=behind + UP * (obj.height + 0.1))
        b.key(rng.uniform(0.35, 0.5), f, -UP, b.art("pregrasp"), wrist=behind)
        script.extra["reach"] = "behind"
    else:
        start = b.keys[-1].pos
        u = _unit(np.array([c[0] - start[0], c[1] - start[1], 0.0]))
        f = _forward(u, 0.35)
        anat = b.art("pregrasp")
        point = c - u * (obj.radius + 0.03) + UP * float(np.clip(0.5 * obj.height, 0.03, 0.08))
        b.key(rng.uniform(0.5, 0.8), f, -UP + 0.3 * u, anat, point=point, local=fingertip_point(b.rig, b.side, anat))
        script.extra["reach"] = "front"
    b.hold(rng.uniform(0.2, 0.4))
    last = b.keys[-1]
    if script.extra["reach"] == "behind":  # back up over the object
        b.key(rng.uniform(0.3, 0.45), last.f, last.n, b.art("relaxed"),
              wrist=np.array([last.pos[0], last.pos[1], obj.height + 0.13]))
        last = b.keys[-1]
    b.key(rng.uniform(0.4, 0.6), last.f, last.n, b.art("relaxed"), wrist=last.pos + UP * 0.05 - [0, 0.1, 0])


def _point(b: _Builder, scene: Scene, target: int, script: Script) -> None:
    rng, obj = b.rng, scene.objects[target]
    start = b.keys[-1].pos
    aim = obj.pose[:3, 3] + UP * obj.height
    pos = start + np.array([0.0, rng.uniform(0.0, 0.06), rng.uniform(0.06, 0.12)])
    f = _unit(aim - pos)
    n = -UP + 0.2 * f
    anat = b.art("point")
    b.key(rng.uniform(0.5, 0.7), f, n, anat, wrist=pos)
    b.key(rng.uniform(0.2, 0.3), f, n, anat, wrist=pos + 0.03 * f)
    b.key(rng.uniform(0.2, 0.3), f, n, anat, wrist=pos)
    b.hold(rng.uniform(0.2, 0.4))
    b.key(rng.uniform(0.4, 0.6), f, n, b.art("relaxed"), wrist=start)


def _wave(b: _Builder, rng: np.random.Generator) -> None:
    base = b.keys[-1].pos + np.array([0.0, rng.uniform(0.0, 0.08), rng.uniform(0.0, 0.04)])
    palm = np.array([rng.uniform(-0.2, 0.2), -1.0, 0.2]) * (1 if rng.random() < 0.7 else -1)
    half = rng.uniform(0.22, 0.32)
    amp = rng.uniform(0.3, 0.5)
    anat = b.art(rng.choice(["flat", "spread"]))
    b.key(rng.uniform(0.4, 0.6), UP, palm, anat, wrist=base)
    for i in range(int(rng.integers(3, 7))):
        side = amp * (1 if i % 2 == 0 else -1)
        f = _unit(UP + side * np.array([1.0, 0.0, 0.0]))
        b.key(half, f, palm, anat, wrist=base + np.array([0.03 * np.sign(side), 0.0, 0.0]))
    b.key(half, UP, palm, anat, wrist=base)


def _open_close(b: _Builder, rng: np.random.Generator) -> None:
    base = b.keys[-1].pos + np.array([0.0, rng.uniform(0.0, 0.06), rng.uniform(0.0, 0.04)])
    if rng.random() < 0.5:
        f, n = UP + np.array([0, 0.3, 0]), np.array([0.0, -1.0, 0.0])  # palm to the viewer
    else:
        f, n = np.array([0.0, 1.0, -0.2]), -UP  # palm down
    half = rng.uniform(0.3, 0.45)
    b.key(rng.uniform(0.35, 0.5), f, n, b.art("spread"), wrist=base)
    for i in range(int(rng.integers(2, 6))):
        b.key(half, f, n, b.art("fist" if i % 2 == 0 else "spread"), wrist=base)


def _gesture(b: _Builder, rng: np.random.Generator) -> None:
    kinds = ["thumb_cmc", "thumb_mcp", "thumb_ip"] + ["mcp", "pip", "dip"] * 4
    lo = np.array([[r[0] for r in ANATOMICAL_RANGES[k]] for k in kinds])
    hi = np.array([[r[1] for r in ANATOMICAL_RANGES[k]] for k in kinds])
    base = b.keys[-1].pos
    for _ in range(int(rng.integers(3, 6))):
        anat = lo + (hi - lo) * rng.random(lo.shape)
        pos = base + rng.uniform([-0.06, -0.04, -0.02], [0.06, 0.06, 0.04])
        f = _unit(np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.2, 1.0), rng.uniform(-0.2, 1.0)]))
        n = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-1.0, 0.0), rng.uniform(-1.0, 0.0)])
        b.key(rng.uniform(0.35, 0.6), f, n, anat, wrist=pos)


def _idle(b: _Builder, rng: np.random.Generator, duration: float) -> None:
    base = b.keys[-1].pos
    for _ in range(2):
        last = b.keys[-1]
        b.key(duration / 2, last.f, last.n, b.art("relaxed"), wrist=base + rng.uniform(-0.02, 0.02, 3))


def sample_script(rng: np.random.Generator, scene: Scene, rig: HandRig, duration: float,
                  two_hand_prob: float = 0.35) -> Script:
    """Draw the clip's action and hand tracks; ``duration`` is the clip length in seconds."""
    action = ACTIONS[int(rng.choice(len(ACTIONS), p=_WEIGHTS / _WEIGHTS.sum()))]
    graspable = [i for i, o in enumerate(scene.objects) if o.kind != "bowl" and o.radius <= 0.065]
    if action == "grasp" and not graspable:
        action = "push"
    free = action in FREE_SPACE_ACTIONS
    target = -1
    if not free:
        pool = graspable if action == "grasp" else list(range(len(scene.objects)))
        target = int(rng.choice(pool))
        if action in ("reach", "push") and rng.random() < 0.8:  # taller objects hide more of the hand
            target = max(pool, key=lambda i: scene.objects[i].height)
    primary = "right" if rng.random() < 0.65 else "left"
    script = Script(action, target, [])
    sides = [primary] + (["left" if primary == "right" else "right"] if rng.random() < two_hand_prob else [])
    for k, side in enumerate(sides):
        b = _Builder(rig, side, rng)
        _start(b, scene, free_space=free)
        if k == 0:
            if free:
                {"wave": _wave, "open_close": _open_close, "gesture": _gesture}[action](b, rng)
            else:
                {"grasp": _grasp, "push": _push, "reach": _reach, "point": _point}[action](b, scene, target, script)
            if action == "grasp":
                script.grasp_track = 0
        elif free:
            _gesture(b, rng)
        else:
            _idle(b, rng, duration)
        # squeeze to fit the clip, then start at a random offset
        end = b.keys[-1].t
        scale = min(1.0, 0.95 * duration / max(end, 1e-6))
        offset = rng.uniform(0.0, max(duration - end * scale, 0.0) * 0.6)
        for key in b.keys:
            key.t = offset + key.t * scale
        if k == 0 and action == "grasp":
            script.attach_t = offset + script.attach_t * scale
            script.release_t = offset + script.release_t * scale
        betas = rng.uniform(-1.5, 1.5, 10)
        script.tracks.append(HandTrack(side, b.keys, betas))
    return script
