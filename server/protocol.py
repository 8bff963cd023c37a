"""Wire protocol of the live app: JSON messages in, validated into plain objects; JSON schemas.

The same messages travel over the WebRTC data channel ``hands`` and the WebSocket ``/ws``.
Client -> server (``type``):

- ``hands``: one tracked frame (DESIGN.md wire message): ``t`` (ms), ``hands`` (0-2 entries of
  ``side``, ``score``, ``image`` [21x3], ``world`` [21x3]), optional ``head.c2w`` (16 floats,
  row-major 4x4 camera-to-world, OpenCV convention, metres).
- ``start``: ``scene`` (a built-in name or an uploaded ``upload:<id>``), optional ``token`` (the
  upload namespace the scene belongs to). First message on the WebSocket.
- ``scene``: switch scene mid-session (same fields as ``start``).
- ``reset``: forget smoothing, warm starts, the first camera pose and the generator's history.
- ``xrhands``: WebXR hands for headsets: ``hands`` entries of ``side`` and ``joints`` (the 25 WebXR
  joint positions, metres, in the same world space as ``head.c2w``, which is required). The
  session maps 25 -> 21 joints (``XR_TO_MEDIAPIPE``: metacarpals dropped) and projects them into
  its virtual camera, so they take the same path as MediaPipe landmarks.
- ``ping``: keep-alive (a session that sends nothing for the idle timeout is closed).

Server -> client: ``started``, ``stats``, ``error``, ``kiosk`` (kiosk mode: role and queue place)
(JSON) and, on the WebSocket, frames as
binary JPEG; on the data channel, a small JPEG of the control render (binary) a few times a second.

Design choices:
- Validation is hand-written (no pydantic model per message): it is small, fast (one message per
  tracked frame) and gives one clear error string per problem (``ProtocolError``), which the
  transports send back as ``{"type": "error", ...}`` while the session keeps running.
- Refused before parsing: messages over ``MAX_MESSAGE_BYTES`` (UTF-8 bytes, not characters) and
  JSON nested deeper than ``MAX_DEPTH`` (``check_json_shape``, a vectorised bracket count, so the
  recursive parser never sees a 1,000-deep document). While parsing, integers longer than
  ``MAX_INT_DIGITS`` digits and the constants NaN / Infinity are refused (``loads``), so no
  number can overflow a float or hit Python's int-string limit.
- Every number is then checked against a physical range before it reaches the fit, the renderer
  or the model: finite; image x, y within [-10, 10] and z within [-10, 10]; world landmarks within
  2 m; WebXR joints within ``MAX_HEAD_DISTANCE_M`` of the origin; ``t`` within ``MAX_T_MS``;
  ``head.c2w`` a rigid transform (orthonormal rotation with det +1, last row 0 0 0 1) whose
  camera lies within ``MAX_HEAD_DISTANCE_M`` of the origin. A refused message changes no state.
- The schemas below are what the README documents and ``GET /schema`` serves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hand2world.hands.skeleton import SIDES
from hand2world.tracking import TrackedHand

MAX_MESSAGE_BYTES = 64 * 1024  # a two-hand message is ~3 KB
MAX_HANDS = 2
SCENE_NAME_MAX = 80
MAX_DEPTH = 8  # the deepest real message ({"hands": [{"image": [[x, y, z]]}]}) is 5 deep
MAX_INT_DIGITS = 20
MAX_T_MS = 1e12  # about 30 years of milliseconds
MAX_HEAD_DISTANCE_M = 20.0  # a tabletop world: a camera further than this from the origin is a bug or an attack
RIGID_TOL = 1e-3  # |R^T R - I| and |det R - 1|; float32 poses from a browser are far inside it


class ProtocolError(ValueError):
    """A client message is malformed; ``str(err)`` is the message sent back to the client."""

    def __init__(self, detail: str, code: str = "bad_message") -> None:
        super().__init__(detail)
        self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"type": "error", "error": self.code, "detail": str(self)}


@dataclass
class HandsMessage:
    """A validated ``hands`` message. ``t`` in seconds; ``c2w`` float32 [4, 4] or None;
    ``received``: server arrival time (``time.perf_counter``), set by the session; ``label``: text
    stamped on the frame (server-side only, never from the wire)."""

    t: float
    hands: list[TrackedHand]
    c2w: np.ndarray | None
    received: float = 0.0
    label: str | None = None  # stamped on the frame made from this message (the kiosk's attract loop)


@dataclass
class SceneMessage:
    """A validated ``start`` or ``scene`` message."""

    type: str
    scene: str
    token: str | None


@dataclass
class XRHandsMessage:
    """A validated ``xrhands`` message: ``hands`` = [(side, joints float32 [25, 3])], ``c2w`` [4, 4]."""

    t: float
    hands: list[tuple[str, np.ndarray]]
    c2w: np.ndarray


@dataclass
class ResetMessage:
    type: str = "reset"


@dataclass
class PingMessage:
    """Keep-alive: counts as activity for the idle timeout, changes nothing else."""

    type: str = "ping"


Message = HandsMessage | SceneMessage | ResetMessage | XRHandsMessage | PingMessage

# WebXR hand joint order (25: wrist, thumb metacarpal..tip, then per finger metacarpal, proximal,
# intermediate, distal, tip) -> MediaPipe's 21 (wrist, thumb CMC, MCP, IP, tip, per finger MCP, PIP,
# DIP, tip). The thumb's WebXR metacarpal is MediaPipe's CMC; the other metacarpals have no match.
XR_TO_MEDIAPIPE: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24)

_VEC3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_LANDMARKS = {"type": "array", "items": _VEC3, "minItems": 21, "maxItems": 21}
SCHEMAS: dict[str, dict[str, Any]] = {
    "hands": {
        "type": "object",
        "required": ["type", "hands"],
        "properties": {
            "type": {"const": "hands"},
            "t": {"type": "number", "description": "client timestamp, milliseconds (monotonic)"},
            "hands": {"type": "array", "maxItems": MAX_HANDS, "items": {
                "type": "object", "required": ["side", "image", "world"],
                "properties": {
                    "side": {"enum": list(SIDES)},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "image": {**_LANDMARKS, "description": "MediaPipe normalised x, y (0..1), relative z"},
                    "world": {**_LANDMARKS, "description": "metres around the hand centre"},
                }}},
            "head": {"type": "object", "required": ["c2w"], "properties": {"c2w": {
                "type": "array", "items": {"type": "number"}, "minItems": 16, "maxItems": 16,
                "description": "row-major 4x4 camera-to-world (OpenCV camera: x right, y down, z forward)"}}},
        },
    },
    "start": {
        "type": "object", "required": ["type", "scene"],
        "properties": {"type": {"enum": ["start", "scene"]},
                       "scene": {"type": "string", "maxLength": SCENE_NAME_MAX,
                                 "description": "built-in scene name (GET /scenes) or upload:<id>"},
                       "token": {"type": "string", "description": "upload namespace returned by POST /upload"}},
    },
    "xrhands": {
        "type": "object",
        "required": ["type", "hands", "head"],
        "properties": {
            "type": {"const": "xrhands"},
            "t": {"type": "number", "description": "client timestamp, milliseconds"},
            "hands": {"type": "array", "maxItems": MAX_HANDS, "items": {
                "type": "object", "required": ["side", "joints"],
                "properties": {"side": {"enum": list(SIDES)},
                               "joints": {"type": "array", "minItems": 25, "maxItems": 25, "items": _VEC3,
                                          "description": "WebXR joint positions (XRHand order), metres"}}}},
            "head": {"type": "object", "required": ["c2w"], "properties": {"c2w": {
                "type": "array", "items": {"type": "number"}, "minItems": 16, "maxItems": 16,
                "description": "row-major 4x4 viewer camera-to-world in the OpenCV camera convention "
                               "(WebXR's view matrix times diag(1, -1, -1, 1))"}}},
        },
    },
    "reset": {"type": "object", "required": ["type"], "properties": {"type": {"const": "reset"}}},
    "ping": {"type": "object", "required": ["type"], "properties": {"type": {"const": "ping"}},
             "description": "keep-alive: a session with no message for the idle timeout is closed"},
    "stats": {
        "type": "object",
        "properties": {
            "type": {"const": "stats"}, "mode": {"enum": ["preview", "generator"]}, "source": {"type": "string"},
            "fps": {"type": "number"}, "latency_ms": {"type": "number", "description": "median, last 2 s"},
            "latency_p95_ms": {"type": "number"}, "queue_depth": {"type": "integer"},
            "messages_in": {"type": "integer"}, "messages_dropped": {"type": "integer"},
            "hands_seen": {"type": "integer", "description": "hands messages with at least one hand"},
            "frames_out": {"type": "integer"}, "frames_dropped": {"type": "integer"},
            "control_pixels": {"type": "integer", "description": "non-black pixels of the last control render"},
            "errors": {"type": "integer"}, "scene": {"type": "string"},
        },
    },
    "kiosk": {"type": "object", "required": ["type", "role", "position", "queue", "attract"],
              "description": "kiosk mode, server -> client: this visitor's turn and place",
              "properties": {"type": {"const": "kiosk"}, "role": {"enum": ["active", "queued"]},
                             "position": {"type": "integer", "description": "0 = driving, k = k-th in the queue"},
                             "queue": {"type": "integer", "description": "visitors waiting"},
                             "attract": {"type": "boolean", "description": "the attract loop is playing"},
                             "turn_left_s": {"type": "number"}, "idle_left_s": {"type": "number"}}},
    "error": {"type": "object", "required": ["type", "error", "detail"],
              "properties": {"type": {"const": "error"}, "error": {"type": "string"}, "detail": {"type": "string"}}},
}


def _finite_array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(value, list):
        raise ProtocolError(f"{what} must be a list of numbers with shape {list(shape)}")
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{what} must be numbers with shape {list(shape)}: {exc}") from None
    if arr.shape != shape:
        raise ProtocolError(f"{what} must have shape {list(shape)}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ProtocolError(f"{what} must be finite numbers")
    return arr


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite JSON number within [lo, hi] (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"{what} must be a finite number")
    if not lo <= value <= hi:
        raise ProtocolError(f"{what} must be within [{lo:g}, {hi:g}], got {value:.6g}")
    return float(value)


def _parse_hand(entry: Any, i: int) -> TrackedHand:
    if not isinstance(entry, dict):
        raise ProtocolError(f"hands[{i}] must be an object")
    side = entry.get("side")
    if side not in SIDES:
        raise ProtocolError(f"hands[{i}].side must be one of {list(SIDES)}, got {side!r}"[:200])
    score = _number(entry.get("score", 1.0), f"hands[{i}].score", 0.0, 1.0)
    image = _finite_array(entry.get("image"), (21, 3), f"hands[{i}].image")
    world = _finite_array(entry.get("world"), (21, 3), f"hands[{i}].world")
    if np.abs(image).max() > 10 or np.abs(world).max() > 2:
        raise ProtocolError(f"hands[{i}]: landmarks out of range (image x, y, z within [-10, 10], world within 2 m)")
    return TrackedHand(side, score, image, world)


def _parse_scene(data: dict, kind: str) -> SceneMessage:
    scene = data.get("scene")
    if not isinstance(scene, str) or not scene or len(scene) > SCENE_NAME_MAX:
        raise ProtocolError(f"{kind}.scene must be a non-empty string of at most {SCENE_NAME_MAX} characters")
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > 64):
        raise ProtocolError(f"{kind}.token must be a string")
    return SceneMessage(kind, scene, token)


def _parse_head(head: Any) -> np.ndarray:
    if not isinstance(head, dict):
        raise ProtocolError("head must be an object with c2w")
    c2w = _finite_array(head.get("c2w"), (16,), "head.c2w").reshape(4, 4)
    R = c2w[:3, :3].astype(np.float64)
    if (not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-4) or np.abs(R.T @ R - np.eye(3)).max() > RIGID_TOL
            or abs(np.linalg.det(R) - 1) > RIGID_TOL):
        raise ProtocolError("head.c2w must be a rigid transform (orthonormal rotation with det 1, no scale or "
                            "shear; last row 0 0 0 1)")
    distance = float(np.linalg.norm(c2w[:3, 3].astype(np.float64)))
    if distance > MAX_HEAD_DISTANCE_M:
        raise ProtocolError(f"head.c2w: the camera is {distance:.3g} m from the origin "
                            f"(at most {MAX_HEAD_DISTANCE_M:g} m)")
    return c2w


def xr_to_tracked(joints: np.ndarray, side: str, c2w: np.ndarray, K: np.ndarray, height: int,
                  width: int) -> TrackedHand | None:
    """WebXR joints [25, 3] (world) -> a MediaPipe-style ``TrackedHand`` seen by camera ``c2w`` with ``K``.

    ``image``: projected pixels normalised by the image size (z: depth relative to the wrist in
    units of the image width, like MediaPipe); ``world``: camera-axis metres around the hand's
    centre. Returns None when the hand is behind or too near the camera (< 5 cm).
    """
    pts = np.asarray(joints, np.float64)[list(XR_TO_MEDIAPIPE)]
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    if (cam[:, 2] < 0.05).any():
        return None
    uv = cam @ np.asarray(K, np.float64).T
    uv = uv[:, :2] / uv[:, 2:3]
    rel_z = (cam[:, 2] - cam[0, 2]) * K[0, 0] / cam[0, 2] / width
    image = np.column_stack([uv[:, 0] / width, uv[:, 1] / height, rel_z])
    if np.abs(image[:, :2]).max() > 10:
        return None
    return TrackedHand(side, 1.0, image.astype(np.float32), (cam - cam.mean(0)).astype(np.float32))


def byte_size(raw: str | bytes) -> int:
    """UTF-8 size of a message (a str of n characters is n to 4n bytes)."""
    if isinstance(raw, bytes | bytearray):
        return len(raw)
    return len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogatepass"))


_OPEN, _CLOSE, _QUOTE, _BACKSLASH = (np.frombuffer(c, np.uint8) for c in (b"[{", b"]}", b'"', b"\\"))


def json_depth(raw: bytes) -> int:
    """Deepest bracket nesting of a JSON text, counting brackets outside strings only.

    Vectorised (numpy) for text without backslashes, where every quote opens or closes a string;
    text with escapes takes a plain loop (bounded by ``MAX_MESSAGE_BYTES``).
    """
    b = np.frombuffer(raw, np.uint8)
    if not (b == _BACKSLASH[0]).any():
        outside = (np.cumsum(b == _QUOTE[0]) % 2) == 0
        step = np.isin(b, _OPEN).astype(np.int32) - np.isin(b, _CLOSE).astype(np.int32)
        depth = np.cumsum(np.where(outside, step, 0))
        return int(depth.max()) if depth.size else 0
    depth = best = 0
    in_string = escaped = False
    for c in raw:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:
                escaped = True
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        elif c in (0x5D, 0x7D):
            depth -= 1
    return best


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ProtocolError(f"integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})", "bad_number")
    return int(text)


def _parse_constant(name: str) -> float:
    raise ProtocolError(f"{name} is not a finite number", "bad_number")


def loads(raw: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON: size (bytes) and nesting are checked before parsing, numbers while parsing.

    Raises ``ProtocolError`` (codes ``too_large``, ``too_deep``, ``bad_json``, ``bad_number``); never
    ``RecursionError``, ``OverflowError`` or the int-string ``ValueError``.
    """
    size = byte_size(raw)
    if size > max_bytes:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {max_bytes} bytes", "too_large")
    data = raw if isinstance(raw, bytes | bytearray) else raw.encode("utf-8", "surrogatepass")
    depth = json_depth(bytes(data))
    if depth > max_depth:
        raise ProtocolError(f"JSON nested {depth} deep (at most {max_depth})", "too_deep")
    try:
        return json.loads(raw, parse_int=_parse_int, parse_constant=_parse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not valid JSON: {exc}", "bad_json") from None
    except RecursionError:  # not reachable after the depth check; kept so no parser error escapes
        raise ProtocolError("JSON nested too deep", "too_deep") from None


def parse_message(raw: str | bytes) -> Message:
    """Validate one client message (JSON text). Raises ``ProtocolError`` with a clear detail."""
    data = loads(raw)
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object with a 'type'")
    kind = data.get("type")
    if kind == "hands":
        hands = data.get("hands")
        if not isinstance(hands, list):
            raise ProtocolError("hands.hands must be a list")
        if len(hands) > MAX_HANDS:
            raise ProtocolError(f"at most {MAX_HANDS} hands per message, got {len(hands)}")
        t = _number(data.get("t", 0.0), "hands.t (milliseconds)", -MAX_T_MS, MAX_T_MS)
        c2w = _parse_head(data.get("head")) if data.get("head") is not None else None
        return HandsMessage(t / 1000.0, [_parse_hand(h, i) for i, h in enumerate(hands)], c2w)
    if kind == "xrhands":
        hands, t = data.get("hands"), data.get("t", 0.0)
        if not isinstance(hands, list) or len(hands) > MAX_HANDS:
            raise ProtocolError(f"xrhands.hands must be a list of at most {MAX_HANDS} hands")
        t = _number(t, "xrhands.t (milliseconds)", -MAX_T_MS, MAX_T_MS)
        if data.get("head") is None:
            raise ProtocolError("xrhands needs head.c2w (the joints are in its world space)")
        out = []
        for i, h in enumerate(hands):
            if not isinstance(h, dict) or h.get("side") not in SIDES:
                raise ProtocolError(f"xrhands.hands[{i}] must be an object with side in {list(SIDES)}")
            joints = _finite_array(h.get("joints"), (25, 3), f"xrhands.hands[{i}].joints")
            if np.abs(joints).max() > MAX_HEAD_DISTANCE_M:
                raise ProtocolError(f"xrhands.hands[{i}].joints out of range (metres, within "
                                    f"{MAX_HEAD_DISTANCE_M:g} m of the origin)")
            out.append((h["side"], joints))
        return XRHandsMessage(t / 1000.0, out, _parse_head(data["head"]))
    if kind in ("start", "scene"):
        return _parse_scene(data, kind)
    if kind == "reset":
        return ResetMessage()
    if kind == "ping":
        return PingMessage()
    raise ProtocolError(f"unknown message type {kind!r}; expected one of hands, xrhands, start, scene, reset, "
                        f"ping"[:200], "unknown_type")


def hands_message(hands: list[TrackedHand], t_ms: float, c2w: np.ndarray | None = None) -> dict[str, Any]:
    """Build a wire ``hands`` message (for Python clients, tests and benchmarks)."""
    msg: dict[str, Any] = {"type": "hands", "t": float(t_ms), "hands": [h.to_dict() for h in hands]}
    if c2w is not None:
        msg["head"] = {"c2w": np.asarray(c2w, dtype=np.float64).reshape(16).tolist()}
    return msg
