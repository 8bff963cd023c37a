"""MediaPipe HandLandmarker wrapper: RGB frames -> 21 image + 21 world landmarks per hand.

Design choices:

- One small class over the MediaPipe Tasks API (mediapipe >= 1.2), CPU delegate, model from
  ``asset_path("hand_landmarker.task")`` (built at set-up by ``build_hand_landmarker_bundle``);
  nothing is ever downloaded here. A missing bundle raises ``AssetMissingError`` with the
  set-up hint.
- ``side`` is the person's anatomical hand ("left"/"right") -- what a hand model
  (``HandModel.load(side=...)``) needs. MediaPipe 1.2.x reports the anatomical hand for an
  image as a camera sees it (egocentric headset, world-facing phone, raw webcam frames from
  OpenCV or ``getUserMedia``); checked on real footage: the palm photo (a left palm, fingers
  to the right, thumb up) comes out "Left", the cup video (a right hand reaching in from the
  right, thumb on the near side) "Right" on 99% of tracked frames, and flipping the video
  flips the labels. (The old ``mediapipe.solutions`` docs said the opposite, selfie-mirrored
  input; that no longer holds for the Tasks graph.) So ``mirrored=False`` (the default, the
  project's main case) keeps MediaPipe's label and ``mirrored=True`` -- frames that were
  flipped horizontally, like a selfie preview -- swaps it.
- Landmarks stay in the frame of the image passed in, mirrored or not: ``image`` is
  MediaPipe's normalised ``(x / W, y / H, relative depth)``, ``world`` metres around the hand
  centre with image-aligned axes (x right, y down, z away from the camera).
  ``TrackedHand.flip_horizontal()`` maps a hand to the flipped image (keeping ``side``), e.g.
  to undo a selfie mirror before fitting a mesh.
- ``score`` is MediaPipe's handedness-classifier score (the Tasks API exposes no separate
  presence score).
- Modes: "image" runs detection on every call (stateless, deterministic per frame); "video"
  tracks between calls (faster, steadier labels) and needs strictly increasing timestamps,
  generated at 33 ms steps when not given. The same frames through a fresh tracker give
  bit-identical results (CPU/XNNPACK), which the tests rely on.
- MediaPipe now and then returns the same hand twice (seen on 2 of the cup video's 217
  frames); near-identical detections (mean landmark distance under ``duplicate_threshold``
  of the hand's box diagonal) are merged, keeping the one MediaPipe lists first (the tracked
  one in video mode). Hands come back sorted by wrist x (left to right in the image).
- Calls are serialised by a lock: MediaPipe task objects are not thread-safe.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hand2world.hands.skeleton import SIDES
from hand2world.paths import AssetMissingError, asset_path

log = logging.getLogger(__name__)

NUM_LANDMARKS = 21


@dataclass
class TrackedHand:
    """One tracked hand.

    Attributes:
        side: the person's anatomical hand, "left" or "right" (see module docstring).
        score: handedness-classifier confidence in [0, 1].
        image: float32 ``[21, 3]``: x, y normalised to the image width/height (``[0, 1]``
            inside the image; points may lie slightly outside), z relative depth (wrist = 0,
            smaller = nearer the camera, roughly in units of the image width).
        world: float32 ``[21, 3]``: metres, origin near the hand centre, axes aligned with the
            image (x right, y down, z away from the camera).
    """

    side: str
    score: float
    image: np.ndarray
    world: np.ndarray

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        self.image = np.asarray(self.image, dtype=np.float32)
        self.world = np.asarray(self.world, dtype=np.float32)
        for name, arr in (("image", self.image), ("world", self.world)):
            if arr.shape != (NUM_LANDMARKS, 3):
                raise ValueError(f"{name} landmarks must be [21, 3], got {arr.shape}")
        self.score = float(self.score)

    def image_pixels(self, width: int, height: int) -> np.ndarray:
        """Image landmarks in pixels of a ``width x height`` image: float32 ``[21, 2]`` (x, y)."""
        return self.image[:, :2] * np.array([width, height], dtype=np.float32)

    def flip_horizontal(self) -> TrackedHand:
        """The same hand as seen in the horizontally flipped image (``side`` unchanged).

        image x -> 1 - x, world x -> -x; the chirality of the points flips, the person's hand does not.
        """
        image = self.image.copy()
        image[:, 0] = 1.0 - image[:, 0]
        world = self.world.copy()
        world[:, 0] = -world[:, 0]
        return TrackedHand(self.side, self.score, image, world)

    def to_dict(self) -> dict[str, Any]:
        """The wire-format entry: ``{"side", "score", "image": [[x,y,z] x21], "world": [[x,y,z] x21]}``."""
        return {
            "side": self.side,
            "score": round(self.score, 4),
            "image": self.image.round(5).tolist(),
            "world": self.world.round(5).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackedHand:
        """Inverse of ``to_dict`` (validates side and shapes)."""
        return cls(str(data["side"]), float(data.get("score", 1.0)), np.asarray(data["image"]),
                   np.asarray(data["world"]))


def _validate_frame(rgb: Any) -> np.ndarray:
    """Check an RGB frame and return it C-contiguous: uint8 ``[H, W, 3]``."""
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"expected a numpy uint8 [H, W, 3] RGB array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8 RGB [H, W, 3], got {rgb.dtype} (scale floats to 0..255)")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected shape [H, W, 3] (RGB), got {rgb.shape}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ValueError(f"image too small: {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _is_duplicate(a: TrackedHand, b: TrackedHand, threshold: float) -> bool:
    """True when two detections are the same hand: mean 2-D landmark distance < threshold x box diagonal."""
    diag = float(np.linalg.norm(a.image[:, :2].max(0) - a.image[:, :2].min(0)))
    dist = float(np.linalg.norm(a.image[:, :2] - b.image[:, :2], axis=1).mean())
    return diag > 0 and dist < threshold * diag


class HandTracker:
    """Detect / track up to ``num_hands`` hands in RGB frames with MediaPipe HandLandmarker.

    Args:
        model_path: a ``hand_landmarker.task`` bundle; default ``asset_path("hand_landmarker.task")``.
        num_hands: most hands to return. With fewer hands in view than this, video mode runs the
            palm detector on every frame (about 2x slower than ``num_hands=1`` with one hand).
        min_detection_confidence: palm-detector threshold.
        min_presence_confidence: landmark-model hand-presence threshold.
        min_tracking_confidence: video mode: below this the hand is re-detected.
        mode: "image" (independent frames) or "video" (tracking; increasing timestamps).
        mirrored: the frames are horizontally flipped (selfie preview); swaps MediaPipe's
            labels so ``side`` stays the person's anatomical hand.
        duplicate_threshold: merge detections closer than this (see module docstring); 0 disables.

    Use as a context manager or call ``close()``.
    """

    FRAME_INTERVAL_MS = 33  # step for generated video-mode timestamps

    def __init__(
        self,
        model_path: str | Path | None = None,
        num_hands: int = 2,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        mode: Literal["image", "video"] = "image",
        mirrored: bool = False,
        duplicate_threshold: float = 0.3,
    ) -> None:
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision.core.vision_task_running_mode import VisionTaskRunningMode
        from mediapipe.tasks.python.vision.hand_landmarker import HandLandmarker, HandLandmarkerOptions

        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        if not isinstance(num_hands, int) or num_hands < 1:
            raise ValueError(f"num_hands must be a positive int, got {num_hands!r}")
        confidences = {"min_detection_confidence": min_detection_confidence,
                       "min_presence_confidence": min_presence_confidence,
                       "min_tracking_confidence": min_tracking_confidence}
        for name, value in confidences.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

        if model_path is None:
            path = asset_path("hand_landmarker.task")  # raises AssetMissingError with the set-up hint
        else:
            path = Path(model_path).expanduser()
            if not path.is_file():
                raise AssetMissingError(
                    f"hand-landmarker bundle not found at {path}. Build it with "
                    "`hand2world.tracking.build_hand_landmarker_bundle(out=...)` or run `make setup`."
                )
        self.model_path = path
        self.mode = mode
        self.mirrored = bool(mirrored)
        self.num_hands = num_hands
        self.duplicate_threshold = float(duplicate_threshold)
        running_mode = VisionTaskRunningMode.VIDEO if mode == "video" else VisionTaskRunningMode.IMAGE
        options = HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(path), delegate=BaseOptions.Delegate.CPU),
            running_mode=running_mode,
            num_hands=num_hands,
            min_hand_detection_confidence=float(min_detection_confidence),
            min_hand_presence_confidence=float(min_presence_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        try:
            self._landmarker = HandLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise RuntimeError(
                f"MediaPipe could not load {path} ({exc}); rebuild it with "
                "`build_hand_landmarker_bundle(force=True)`"
            ) from exc
        self._lock = threading.Lock()
        self._last_ts: int | None = None
        log.debug("HandTracker(%s, mode=%s, num_hands=%d, mirrored=%s)", path, mode, num_hands, mirrored)

    # ------------------------------------------------------------------------------------------
    def _next_timestamp(self, timestamp_ms: int | None) -> int:
        if timestamp_ms is None:
            ts = 0 if self._last_ts is None else self._last_ts + self.FRAME_INTERVAL_MS
        else:
            ts = int(timestamp_ms)
            if self._last_ts is not None and ts <= self._last_ts:
                raise ValueError(
                    f"video mode needs strictly increasing timestamps: got {ts} ms after {self._last_ts} ms "
                    "(pass timestamp_ms=None to have them generated)"
                )
        return ts

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[TrackedHand]:
        """Landmarks of the hands in one frame.

        Args:
            rgb: uint8 ``[H, W, 3]`` RGB frame.
            timestamp_ms: video mode: frame time in ms, strictly increasing; generated when None.
                Ignored in image mode.

        Returns:
            Up to ``num_hands`` ``TrackedHand`` (empty when none), sorted by wrist x.
        """
        import mediapipe as mp

        frame = _validate_frame(rgb)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)
        with self._lock:
            if self._landmarker is None:
                raise RuntimeError("HandTracker is closed")
            if self.mode == "video":
                ts = self._next_timestamp(timestamp_ms)
                result = self._landmarker.detect_for_video(image, ts)
                self._last_ts = ts
            else:
                result = self._landmarker.detect(image)
        return self._convert(result)

    def _convert(self, result: Any) -> list[TrackedHand]:
        hands: list[TrackedHand] = []
        for handedness, image_lms, world_lms in zip(
            result.handedness, result.hand_landmarks, result.hand_world_landmarks, strict=True
        ):
            label = handedness[0].category_name.lower()
            if label not in SIDES:
                raise RuntimeError(f"unexpected MediaPipe handedness label {handedness[0].category_name!r}")
            if self.mirrored:
                label = "left" if label == "right" else "right"
            hand = TrackedHand(
                side=label,
                score=handedness[0].score,
                image=np.array([[p.x, p.y, p.z] for p in image_lms], dtype=np.float32),
                world=np.array([[p.x, p.y, p.z] for p in world_lms], dtype=np.float32),
            )
            if self.duplicate_threshold > 0 and any(
                _is_duplicate(kept, hand, self.duplicate_threshold) for kept in hands
            ):
                log.debug("dropped a duplicate %s-hand detection", hand.side)
                continue
            hands.append(hand)
        hands.sort(key=lambda h: float(h.image[0, 0]))
        return hands

    def close(self) -> None:
        """Release the MediaPipe graph (idempotent)."""
        with self._lock:
            if self._landmarker is not None:
                self._landmarker.close()
                self._landmarker = None

    def __enter__(self) -> HandTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
