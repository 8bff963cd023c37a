"""hand2world.geometry: OpenCV-convention cameras, Plücker rays, projection, rotations.

Conventions (see ``camera``): camera x right, y down, z forward; metres; 4x4 ``w2c``/``c2w``;
``K`` 3x3 in pixels; pixel ``(i, j)`` centred at ``(i + 0.5, j + 0.5)``. Torch in, torch out
(NumPy accepted), batched over leading dimensions.
"""

from hand2world.geometry.camera import (
    as_tensor,
    backproject,
    fov_from_intrinsics,
    intrinsics_from_fov,
    invert_rigid,
    look_at,
    make_rigid,
    project,
    relative_c2w,
    scale_intrinsics,
    transform_points,
)
from hand2world.geometry.rays import pixel_grid, plucker_rays, plucker_to_rgb
from hand2world.geometry.rotations import (
    axis_angle_to_matrix,
    kabsch_rotation,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    matrix_to_rotation_9d,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
    rotation_9d_to_matrix,
    rotation_angle_deg,
)

__all__ = [
    "as_tensor",
    "axis_angle_to_matrix",
    "backproject",
    "fov_from_intrinsics",
    "intrinsics_from_fov",
    "invert_rigid",
    "kabsch_rotation",
    "look_at",
    "make_rigid",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "matrix_to_rotation_9d",
    "pixel_grid",
    "plucker_rays",
    "plucker_to_rgb",
    "project",
    "quaternion_to_matrix",
    "relative_c2w",
    "rotation_6d_to_matrix",
    "rotation_9d_to_matrix",
    "rotation_angle_deg",
    "scale_intrinsics",
    "transform_points",
]
