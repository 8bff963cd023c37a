"""Hand tracking: MediaPipe HandLandmarker wrapper and its model-asset set-up.

``HandTracker().detect(rgb)`` -> ``list[TrackedHand]`` (side, score, image [21,3], world [21,3]);
``build_hand_landmarker_bundle()`` builds the ``hand_landmarker.task`` it loads (set-up only);
``hands_found(frames)`` / ``detection_rate`` judge realism (does MediaPipe find a hand?).
"""

from hand2world.tracking.assets import build_hand_landmarker_bundle
from hand2world.tracking.detection import detection_rate, hands_found, visible_hand_frames
from hand2world.tracking.tracker import HandTracker, TrackedHand

__all__ = ["HandTracker", "TrackedHand", "build_hand_landmarker_bundle", "detection_rate", "hands_found",
           "visible_hand_frames"]
