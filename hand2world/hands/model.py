"""Hand pose / mesh containers and the ``HandModel`` module (open model or MANO).

Design choices:
- One parameterisation for every kind (MANO-style): ``global_orient [B,3]`` and ``hand_pose
  [B,45]`` axis-angle, ``betas [B,10]``, ``transl [B,3]``. ``hand_pose`` holds the 15 finger
  joints in the order thumb CMC, MCP, IP; index MCP, PIP, DIP; middle MCP, PIP, DIP; ring MCP,
  PIP, DIP; pinky MCP, PIP, DIP (``skeleton.ARTICULATED_JOINT_NAMES[1:]``), each a rotation in
  its parent's frame whose rest axes are the model axes. ``hand_pose = 0`` is the flat hand.
- ``global_orient`` rotates the hand about its wrist joint (MANO: about its root joint, which is
  the wrist); ``transl`` is added afterwards. So ``transl`` is where the rest-pose wrist goes
  (the open model's wrist is its origin; MANO's is ``j_template[0]``, not the origin).
- Outputs: ``HandMesh.joints`` are the 21 MediaPipe landmarks (16 joints + 5 fingertip
  vertices), in the frame of ``global_orient``/``transl`` (camera coordinates when fitted).
- All geometry is stored as float32 buffers and cast to the pose's dtype/device on use, so
  float64 poses give float64 meshes. Math lives in ``lbs.py``; no I/O here beyond ``load``.
- ``joints_only`` skins just the 5 fingertip vertices: the fitter's inner loop never touches the
  full mesh.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from hand2world import paths
from hand2world.hands.lbs import KinematicTree, axis_angle_to_matrix, lbs
from hand2world.hands.skeleton import (
    MEDIAPIPE_ARTICULATED,
    MEDIAPIPE_FROM_INTERNAL,
    NUM_BETAS,
    NUM_HAND_JOINTS,
    PARENTS,
    SIDES,
)

log = logging.getLogger(__name__)

__all__ = ["HandMesh", "HandModel", "HandPose"]


@dataclass
class HandPose:
    """MANO-style hand parameters for a batch of ``B`` hands.

    Attributes:
        global_orient: ``[B, 3]`` axis-angle of the whole hand about its wrist joint.
        hand_pose: ``[B, 45]`` axis-angle of the 15 finger joints, order thumb (CMC, MCP, IP),
            index, middle, ring, pinky (MCP, PIP, DIP); zero is the flat hand.
        betas: ``[B, 10]`` shape coefficients (one unit ~ one standard deviation).
        transl: ``[B, 3]`` translation added after rotation (metres).
    """

    global_orient: Tensor
    hand_pose: Tensor
    betas: Tensor
    transl: Tensor

    @classmethod
    def zeros(
        cls, batch: int = 1, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> HandPose:
        """Flat hand, mean shape, identity orientation, at the origin."""

        def z(n: int) -> Tensor:
            return torch.zeros(batch, n, dtype=dtype, device=device)

        return cls(z(3), z(3 * NUM_HAND_JOINTS), z(NUM_BETAS), z(3))

    @property
    def batch_size(self) -> int:
        return self.global_orient.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.global_orient.dtype

    @property
    def device(self) -> torch.device:
        return self.global_orient.device

    def to_vector(self) -> Tensor:
        """``[B, 61]`` = ``cat(global_orient, hand_pose, betas, transl)``."""
        return torch.cat([self.global_orient, self.hand_pose, self.betas, self.transl], dim=-1)

    @classmethod
    def from_vector(cls, vec: Tensor) -> HandPose:
        """Inverse of ``to_vector``: ``[B, 61]`` (or ``[61]``) -> pose."""
        vec = vec.reshape(-1, vec.shape[-1])
        if vec.shape[-1] != 61:
            raise ValueError(f"pose vectors have 61 entries, got {vec.shape[-1]}")
        go, hp, betas, transl = vec.split([3, 3 * NUM_HAND_JOINTS, NUM_BETAS, 3], dim=-1)
        return cls(go, hp, betas, transl)

    def __getitem__(self, index: int | slice | Tensor | list) -> HandPose:
        """Batch selection; an integer keeps the batch dimension (``pose[i]`` has ``B = 1``)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return HandPose(*(getattr(self, f.name)[index] for f in fields(self)))

    def __len__(self) -> int:
        return self.batch_size

    def detach(self) -> HandPose:
        return HandPose(*(getattr(self, f.name).detach() for f in fields(self)))

    def clone(self) -> HandPose:
        return HandPose(*(getattr(self, f.name).clone() for f in fields(self)))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HandPose:
        return HandPose(*(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)))

    @staticmethod
    def cat(poses: list[HandPose]) -> HandPose:
        """Concatenate along the batch dimension."""
        return HandPose(*(torch.cat([getattr(p, f.name) for p in poses]) for f in fields(HandPose)))


@dataclass
class HandMesh:
    """Posed hands.

    Attributes:
        vertices: ``[B, V, 3]``.
        joints: ``[B, 21, 3]`` in MediaPipe landmark order (``MEDIAPIPE_JOINT_NAMES``).
        faces: ``[F, 3]`` int64, counter-clockwise seen from outside.
        side: ``"left"`` or ``"right"``.
    """

    vertices: Tensor
    joints: Tensor
    faces: Tensor
    side: str

    @property
    def batch_size(self) -> int:
        return self.vertices.shape[0]

    def __getitem__(self, index: int | slice | Tensor | list) -> HandMesh:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return HandMesh(self.vertices[index], self.joints[index], self.faces, self.side)


class HandModel(nn.Module):
    """A skinned parametric hand: ``HandPose -> HandMesh`` (differentiable, batched).

    Build with ``HandModel.load``. Buffers (float32): ``v_template [V,3]``, ``shapedirs [V,3,10]``,
    ``weights [V,16]``, ``j_template [16,3]``, ``j_shapedirs [16,3,10]``, ``posedirs [135,V*3]``
    (MANO only), ``faces_tensor [F,3]``, ``tip_vertex_ids [5]``, ``joint_frames [16,3,3]``,
    ``hand_mean [45]``.
    """

    def __init__(self, arrays: dict[str, np.ndarray], side: str, kind: str) -> None:
        super().__init__()
        if side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        self._side = side
        self.kind = kind
        self.tree = KinematicTree(PARENTS)

        def buf(name: str, value: np.ndarray | None, dtype: torch.dtype = torch.float32) -> None:
            self.register_buffer(
                name, None if value is None else torch.as_tensor(np.asarray(value), dtype=dtype)
            )

        buf("v_template", arrays["v_template"])
        buf("shapedirs", arrays["shapedirs"][:, :, :NUM_BETAS])
        buf("weights", arrays["weights"])
        buf("j_template", arrays["j_template"])
        buf("j_shapedirs", arrays["j_shapedirs"][:, :, :NUM_BETAS])
        buf("posedirs", arrays.get("posedirs"))
        buf("faces_tensor", arrays["faces"], torch.long)
        buf("tip_vertex_ids", arrays["tip_vertex_ids"], torch.long)
        buf("joint_frames", arrays["joint_frames"])
        buf("hand_mean", arrays.get("hand_mean", np.zeros(3 * NUM_HAND_JOINTS)))
        if self.shapedirs.shape[-1] != NUM_BETAS:
            raise ValueError(f"model has {self.shapedirs.shape[-1]} shape directions, need {NUM_BETAS}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        kind: str = "open",
        side: str = "right",
        mano_dir: str | os.PathLike | None = None,
        *,
        path: str | os.PathLike | None = None,
    ) -> HandModel:
        """Load a hand model.

        Args:
            kind: ``"open"`` (default, MIT-licensed WebXR hand built at set-up) or ``"mano"``.
            side: ``"right"`` or ``"left"``.
            mano_dir: for ``kind="mano"``: the folder with ``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` (or
                its ``mano/`` sub-folder, or the ``.pkl`` itself); default ``$HAND2WORLD_MANO_DIR``.
            path: for ``kind="open"``: the ``.npz`` to read instead of
                ``paths.asset_path("open_hand_{side}.npz")``.
        """
        if kind == "open":
            from hand2world.hands.open_model import load_open_hand

            npz = Path(path) if path is not None else paths.asset_path(f"open_hand_{side}.npz")
            data = load_open_hand(npz)
            if str(data["side"]) != side:
                raise ValueError(f"{npz} holds a {data['side']} hand, asked for {side}")
            arrays = dict(data)
            arrays["j_template"] = data["j_template"][list(MEDIAPIPE_ARTICULATED)]
            arrays["j_shapedirs"] = data["j_shapedirs"][list(MEDIAPIPE_ARTICULATED)]
            return cls(arrays, side, "open")
        if kind == "mano":
            from hand2world.hands.mano import (
                find_mano_file,
                fix_left_shapedirs,
                load_mano_pickle,
                mano_model_arrays,
            )

            pkl = find_mano_file(side, mano_dir)
            data = load_mano_pickle(pkl)
            if side == "left":
                right = pkl.with_name(pkl.name.replace("LEFT", "RIGHT"))
                if right != pkl and right.is_file() and fix_left_shapedirs(data, load_mano_pickle(right)):
                    log.info("%s: mirrored the x component of shapedirs (known MANO_LEFT issue)", pkl)
            return cls(mano_model_arrays(data, side), side, "mano")
        raise ValueError(f"unknown hand model kind {kind!r}; use 'open' or 'mano'")

    # ------------------------------------------------------------------ properties
    @property
    def side(self) -> str:
        return self._side

    @property
    def faces(self) -> Tensor:
        """``[F, 3]`` int64 triangle indices."""
        return self.faces_tensor

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return NUM_BETAS

    def rest_joints(self, betas: Tensor | None = None) -> Tensor:
        """Zero-pose joints ``[B, 21, 3]`` (MediaPipe order) for ``betas [B, 10]`` (default: mean shape)."""
        if betas is None:
            betas = torch.zeros(1, NUM_BETAS, dtype=self.v_template.dtype, device=self.v_template.device)
        pose = HandPose.zeros(betas.shape[0], betas.dtype, betas.device)
        pose.betas = betas
        return self.joints_only(pose)

    # ------------------------------------------------------------------ forward
    def _rotmats(self, pose: HandPose) -> Tensor:
        aa = torch.cat([pose.global_orient, pose.hand_pose], dim=-1).reshape(-1, 1 + NUM_HAND_JOINTS, 3)
        return axis_angle_to_matrix(aa)

    def _cast(self, t: Tensor | None, like: Tensor) -> Tensor | None:
        return None if t is None else t.to(dtype=like.dtype, device=like.device)

    def forward(self, pose: HandPose) -> HandMesh:
        """Pose the mesh.

        Args:
            pose: ``HandPose`` with batch ``B``; dtype/device of the outputs follow it.
        Returns:
            ``HandMesh`` with ``vertices [B, V, 3]``, ``joints [B, 21, 3]`` (MediaPipe order).
        """
        ref = pose.global_orient
        c = self._cast
        verts, joints16 = lbs(
            pose.betas,
            self._rotmats(pose),
            c(self.v_template, ref),
            c(self.shapedirs, ref),
            c(self.weights, ref),
            c(self.j_template, ref),
            c(self.j_shapedirs, ref),
            self.tree,
            c(self.posedirs, ref),
        )
        tips = verts[:, self.tip_vertex_ids]
        joints = torch.cat([joints16, tips], dim=1)[:, list(MEDIAPIPE_FROM_INTERNAL)]
        shift = pose.transl.unsqueeze(1)
        return HandMesh(verts + shift, joints + shift, self.faces_tensor, self._side)

    def joint_function(self, dtype: torch.dtype, device: torch.device | str | None = None):
        """A pure function ``(aa [B,16,3], betas [B,10]) -> joints [B,21,3]`` (no translation).

        ``aa`` stacks ``global_orient`` and the 15 ``hand_pose`` rotations. Only the 5 fingertip
        vertices are skinned and the arrays are cast once here, so the returned function is
        cheap to call repeatedly (and inside ``torch.func`` transforms).
        """
        ids = self.tip_vertex_ids
        posedirs = None
        if self.posedirs is not None:
            cols = (ids[:, None] * 3 + torch.arange(3, device=ids.device)).reshape(-1)
            posedirs = self.posedirs[:, cols].to(dtype=dtype, device=device)
        arrays = [
            t.to(dtype=dtype, device=device)
            for t in (
                self.v_template[ids],
                self.shapedirs[ids],
                self.weights[ids],
                self.j_template,
                self.j_shapedirs,
            )
        ]
        tree, order = self.tree, list(MEDIAPIPE_FROM_INTERNAL)

        def joints_fn(aa: Tensor, betas: Tensor) -> Tensor:
            tips, joints16 = lbs(betas, axis_angle_to_matrix(aa), *arrays, tree, posedirs)
            return torch.cat([joints16, tips], dim=1)[:, order]

        return joints_fn

    def joints_only(self, pose: HandPose) -> Tensor:
        """The 21 MediaPipe-order joints ``[B, 21, 3]`` without skinning the whole mesh."""
        fn = self.joint_function(pose.dtype, pose.device)
        aa = torch.cat([pose.global_orient, pose.hand_pose], dim=-1).reshape(-1, 1 + NUM_HAND_JOINTS, 3)
        return fn(aa, pose.betas) + pose.transl.unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, side={self._side}, vertices={self.num_vertices}, faces={self.faces.shape[0]}"
        )
