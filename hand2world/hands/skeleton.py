"""Joint naming and ordering conventions shared by every hand model kind.

Design choices:
- Internally a hand has 16 articulated joints ordered wrist, then thumb, index, middle, ring,
  pinky with three joints each (proximal to distal). ``HandPose.hand_pose`` uses exactly this
  order for its 15 finger joints, for every model kind (MANO arrays are permuted at load).
- Outputs use MediaPipe's 21-landmark order: the 16 joints plus 5 fingertip *vertices* (MANO's
  convention: a fingertip is a skinned surface point, not a joint).
"""

from __future__ import annotations

#: hand sides, in the index order used everywhere (index 0 left, 1 right)
SIDES: tuple[str, str] = ("left", "right")

FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

MEDIAPIPE_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    "index_finger_mcp",
    "index_finger_pip",
    "index_finger_dip",
    "index_finger_tip",
    "middle_finger_mcp",
    "middle_finger_pip",
    "middle_finger_dip",
    "middle_finger_tip",
    "ring_finger_mcp",
    "ring_finger_pip",
    "ring_finger_dip",
    "ring_finger_tip",
    "pinky_mcp",
    "pinky_pip",
    "pinky_dip",
    "pinky_tip",
)

#: The 16 articulated joints; entries 1..15 are the blocks of ``HandPose.hand_pose``.
ARTICULATED_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "index_mcp",
    "index_pip",
    "index_dip",
    "middle_mcp",
    "middle_pip",
    "middle_dip",
    "ring_mcp",
    "ring_pip",
    "ring_dip",
    "pinky_mcp",
    "pinky_pip",
    "pinky_dip",
)

PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

#: index into ``cat([joints16, tips5])`` giving MediaPipe order
MEDIAPIPE_FROM_INTERNAL: tuple[int, ...] = (
    0,
    1,
    2,
    3,
    16,
    4,
    5,
    6,
    17,
    7,
    8,
    9,
    18,
    10,
    11,
    12,
    19,
    13,
    14,
    15,
    20,
)

#: MediaPipe indices of the 16 articulated joints and of the 5 tips
MEDIAPIPE_ARTICULATED: tuple[int, ...] = (0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19)
MEDIAPIPE_TIPS: tuple[int, ...] = (4, 8, 12, 16, 20)

#: MediaPipe indices of the palm (rigid under finger motion): wrist and the four finger MCPs
MEDIAPIPE_PALM: tuple[int, ...] = (0, 5, 9, 13, 17)

#: MANO's joint order (wrist, index, middle, pinky, ring, thumb) -> ours: ours[i] = mano[MANO_TO_OURS[i]]
MANO_TO_OURS: tuple[int, ...] = (0, 13, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9)

#: MANO fingertip vertex ids in our finger order (thumb, index, middle, ring, pinky)
MANO_TIP_VERTICES: tuple[int, ...] = (744, 320, 443, 554, 671)

#: The ten designed shape directions of the open model (``betas`` order), see ``open_model``.
OPEN_SHAPE_NAMES: tuple[str, ...] = (
    "scale",
    "palm_length",
    "palm_width",
    "palm_thickness",
    "finger_thickness",
    "thumb_length",
    "index_length",
    "middle_length",
    "ring_length",
    "pinky_length",
)

NUM_BETAS = 10
NUM_HAND_JOINTS = 15
POSE_VECTOR_SIZE = 3 + 3 * NUM_HAND_JOINTS + NUM_BETAS + 3  # 61
