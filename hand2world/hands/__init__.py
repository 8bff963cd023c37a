"""hand2world.hands: parametric hand models (open default, MANO), landmark fitting, smoothing.

- ``HandModel.load(kind="open"|"mano", side=...)``: ``HandPose -> HandMesh`` (LBS, batched,
  differentiable). The open model is built once at set-up by ``build_open_hand(side)`` from the
  MIT-licensed WebXR generic-hand GLBs; MANO needs the user's own licensed pickles
  (``mano_dir=`` or ``$HAND2WORLD_MANO_DIR``), read by the restricted ``load_mano_pickle``.
- ``fit_landmarks``: MediaPipe world/image landmarks -> ``HandPose`` in camera coordinates.
- ``OneEuroFilter``: landmark smoothing for streams.
"""

from hand2world.hands.fit import fit_landmarks, reprojection_error
from hand2world.hands.mano import load_mano_pickle
from hand2world.hands.model import HandMesh, HandModel, HandPose
from hand2world.hands.open_model import build_open_hand
from hand2world.hands.sampling import random_hand_pose
from hand2world.hands.skeleton import MEDIAPIPE_JOINT_NAMES
from hand2world.hands.smoothing import OneEuroFilter

__all__ = [
    "MEDIAPIPE_JOINT_NAMES",
    "HandMesh",
    "HandModel",
    "HandPose",
    "OneEuroFilter",
    "build_open_hand",
    "fit_landmarks",
    "load_mano_pickle",
    "random_hand_pose",
    "reprojection_error",
]
