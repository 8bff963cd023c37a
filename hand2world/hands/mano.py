"""MANO support: a safe reader for the official (chumpy-laden) pickles and conversion to our arrays.

Design choices:
- MANO is licence-restricted and never shipped. A licence holder points hand2world at the folder
  holding ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` (either directly or in a ``mano/`` sub-folder)
  with ``HandModel.load("mano", mano_dir=...)`` or the environment variable
  ``HAND2WORLD_MANO_DIR``.
- Official MANO pickles contain chumpy objects, and chumpy does not import on Python 3.11. The
  reader is a restricted ``pickle.Unpickler``: ``find_class`` resolves only numpy's array/dtype
  reconstruction helpers, scipy's sparse matrix classes, ``copyreg``'s object reconstructor and
  ``object``; every ``chumpy.*`` class maps to ``_ChumpyArray``, whose ``__setstate__`` keeps the
  pickled value (chumpy stores it under ``'x'``). Anything else raises ``UnpicklingError`` before
  it can be called, so a pickle cannot run code.
- ``mano_model_arrays`` re-expresses MANO in our conventions: joints permuted from MANO's order
  (wrist, index, middle, pinky, ring, thumb) to ours (wrist, thumb, index, middle, ring, pinky),
  the joint regressor folded into ``j_template``/``j_shapedirs``, ``posedirs`` as
  ``[135, V*3]`` rows in our joint order. MANO keeps its own canonical frame (so published MANO
  ``global_orient`` values keep their meaning); ``hand_pose = 0`` is the flat hand (smplx's
  ``flat_hand_mean=True``); ``hand_mean`` is MANO's mean pose in our joint order.
- Known MANO issue (smplx issue #48): in ``MANO_LEFT.pkl`` the x component of ``shapedirs`` is
  not mirrored. When the right pickle sits beside the left one this is detected and fixed.
- ``build_smplx_mano`` builds the real ``smplx.MANO`` layer from the same pre-loaded data (no
  second, unrestricted unpickling); tests use it to show our LBS reproduces smplx exactly.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hand2world.hands.skeleton import MANO_TIP_VERTICES, MANO_TO_OURS, PARENTS

log = logging.getLogger(__name__)

MANO_ENV = "HAND2WORLD_MANO_DIR"
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class _ChumpyArray:
    """Stand-in for any chumpy class: keeps the array chumpy pickles under ``'x'``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.x = None

    def __setstate__(self, state: Any) -> None:
        value = state.get("x") if isinstance(state, dict) else None
        self.x = None if value is None else np.asarray(value)


def _numpy_helpers() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    helpers = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}
    if hasattr(numeric, "_frombuffer"):
        helpers["_frombuffer"] = numeric._frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in (
        "numpy.core.multiarray",
        "numpy._core.multiarray",
        "numpy.core.numeric",
        "numpy._core.numeric",
    ):
        for name, fn in helpers.items():
            allowed[(module, name)] = fn
    return allowed


def _sparse_classes() -> dict[tuple[str, str], Any]:
    import scipy.sparse as sp

    allowed = {}
    for fmt in ("csc", "csr", "coo"):
        for suffix in ("matrix", "array"):
            cls = getattr(sp, f"{fmt}_{suffix}", None)
            if cls is None:
                continue
            for module in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
                allowed[(module, f"{fmt}_{suffix}")] = cls
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (latin-1 only)."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in (
        "latin1",
        "iso88591",
    ):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {type(text).__name__}/{encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy/scipy-sparse reconstruction and chumpy stand-ins; refuses the rest."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``copy_reg``, ``__builtin__``), as the default ``find_class`` maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyArray
        if _RestrictedUnpickler._allowed is None:
            allowed = {**_numpy_helpers(), **_sparse_classes()}
            allowed[("copyreg", "_reconstructor")] = copyreg._reconstructor
            allowed[("builtins", "object")] = object
            allowed[("_codecs", "encode")] = _latin1_encode
            _RestrictedUnpickler._allowed = allowed
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}") from None


def _to_array(value: Any) -> np.ndarray | None:
    if isinstance(value, _ChumpyArray):
        return value.x
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy sparse
        return np.asarray(value.toarray())
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (str, bytes, int, float, list, tuple)):
        try:
            return np.asarray(value)
        except (ValueError, TypeError):
            return None
    return None


def load_mano_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Safely read a MANO ``.pkl`` (official chumpy pickles included) into numpy arrays.

    Args:
        path: ``MANO_RIGHT.pkl`` or ``MANO_LEFT.pkl``.
    Returns:
        key -> array (sparse matrices densified, chumpy objects replaced by their values).
    Raises:
        pickle.UnpicklingError: the file references anything besides numpy/scipy-sparse data or
            chumpy arrays (e.g. ``os.system``); nothing from it is executed.
    """
    with open(path, "rb") as fh:
        raw = _RestrictedUnpickler(fh, encoding="latin1").load()
    if not isinstance(raw, dict):
        raise pickle.UnpicklingError(f"{path}: expected a dict, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        arr = _to_array(value)
        if arr is None:
            log.debug("%s: skipping key %r of type %s", path, key, type(value).__name__)
            continue
        out[str(key)] = arr
    return out


def find_mano_file(side: str, mano_dir: str | os.PathLike | None = None) -> Path:
    """Locate ``MANO_{RIGHT,LEFT}.pkl`` in ``mano_dir`` or ``mano_dir/mano``.

    ``mano_dir`` defaults to ``$HAND2WORLD_MANO_DIR``; it may also be the ``.pkl`` itself.
    """
    if mano_dir is None:
        mano_dir = os.environ.get(MANO_ENV)
    if not mano_dir:
        raise FileNotFoundError(
            "MANO is licence-restricted and not shipped: download it from https://mano.is.tue.mpg.de and "
            f"pass mano_dir=... or set {MANO_ENV} to the folder holding MANO_RIGHT.pkl / MANO_LEFT.pkl"
        )
    root = Path(mano_dir).expanduser()
    if root.is_file():
        return root
    name = f"MANO_{side.upper()}.pkl"
    for candidate in (root / name, root / "mano" / name, root / "models" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found in {root} (nor in {root / 'mano'})")


def _check_shapes(data: dict[str, np.ndarray], path: Any) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: not a MANO model, missing {missing}")
    num_v = data["v_template"].shape[0]
    expect = {
        "v_template": (num_v, 3),
        "weights": (num_v, 16),
        "J_regressor": (16, num_v),
        "kintree_table": (2, 16),
    }
    for key, shape in expect.items():
        if tuple(data[key].shape) != shape:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {shape}")
    if data["shapedirs"].shape[:2] != (num_v, 3) or data["shapedirs"].shape[2] < 10:
        raise ValueError(f"{path}: shapedirs has shape {data['shapedirs'].shape}")
    if data["posedirs"].size != num_v * 3 * 135:
        raise ValueError(f"{path}: posedirs has shape {data['posedirs'].shape}, expected ({num_v},3,135)")


def fix_left_shapedirs(left: dict[str, np.ndarray], right: dict[str, np.ndarray]) -> bool:
    """Mirror the x component of ``MANO_LEFT`` ``shapedirs`` if it was left un-mirrored (in place).

    Returns True when the fix was applied (smplx issue #48).
    """
    ls, rs = left["shapedirs"], right["shapedirs"]
    if ls.shape == rs.shape and np.abs(ls[:, 0, :10] - rs[:, 0, :10]).sum() < 1.0:
        left["shapedirs"] = ls.copy()
        left["shapedirs"][:, 0, :] *= -1.0
        return True
    return False


def mano_model_arrays(data: dict[str, np.ndarray], side: str, num_betas: int = 10) -> dict[str, np.ndarray]:
    """Convert raw MANO arrays to the model arrays ``HandModel`` uses (our joint order).

    Returns ``v_template [V,3]``, ``faces [F,3]``, ``weights [V,16]``, ``shapedirs [V,3,L]``,
    ``j_template [16,3]``, ``j_shapedirs [16,3,L]``, ``posedirs [135,V*3]``, ``tip_vertex_ids [5]``,
    ``hand_mean [45]`` (our joint order) and ``joint_frames [16,3,3]``.
    """
    _check_shapes(data, "MANO data")
    perm = list(MANO_TO_OURS)
    parents_mano = data["kintree_table"][0].astype(np.int64)
    parents_mano[0] = -1
    inv = {m: i for i, m in enumerate(perm)}
    parents = [-1] + [inv[int(parents_mano[m])] for m in perm[1:]]
    if tuple(parents) != PARENTS:
        raise ValueError(f"unexpected MANO kinematic tree {parents_mano.tolist()}")
    v_template = data["v_template"].astype(np.float64)
    shapedirs = data["shapedirs"][:, :, :num_betas].astype(np.float64)
    regressor = data["J_regressor"].astype(np.float64)[perm]
    num_v = len(v_template)
    posedirs = data["posedirs"].reshape(num_v * 3, 135).T  # [135, V*3], 9 rows per MANO joint 1..15
    posedirs = np.concatenate([posedirs[(m - 1) * 9 : m * 9] for m in perm[1:]], axis=0)
    hand_mean = data.get("hands_mean", np.zeros(45)).reshape(15, 3)
    hand_mean = np.concatenate([hand_mean[m - 1] for m in perm[1:]])
    j_template = regressor @ v_template
    arrays = {
        "v_template": v_template,
        "faces": data["f"].astype(np.int64),
        "weights": data["weights"].astype(np.float64)[:, perm],
        "shapedirs": shapedirs,
        "j_template": j_template,
        "j_shapedirs": np.einsum("jv,vcl->jcl", regressor, shapedirs),
        "posedirs": posedirs.astype(np.float64),
        "tip_vertex_ids": np.array(MANO_TIP_VERTICES),
        "hand_mean": hand_mean.astype(np.float64),
    }
    arrays["joint_frames"] = geometric_joint_frames(j_template, v_template[list(MANO_TIP_VERTICES)], side)
    return arrays


def geometric_joint_frames(joints: np.ndarray, tips: np.ndarray, side: str) -> np.ndarray:
    """Anatomical joint frames from rest geometry: columns flexion, abduction, twist (bone axis).

    Args:
        joints: ``[16, 3]`` rest joints in our order; tips: ``[5, 3]`` fingertip points.
    Returns:
        ``[16, 3, 3]``; a positive rotation about the flexion axis moves the bone towards the palm.
    """

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    fingers_dir = unit(joints[7] - joints[0])
    across = joints[4] - joints[13]  # towards the thumb side
    palm = np.cross(across, fingers_dir) if side == "right" else np.cross(fingers_dir, across)
    palm = unit(palm)
    frames = np.tile(np.eye(3), (16, 1, 1))
    for f in range(5):
        chain = [joints[1 + 3 * f], joints[2 + 3 * f], joints[3 + 3 * f], tips[f]]
        for k in range(3):
            twist = unit(chain[k + 1] - chain[k])
            flex = unit(np.cross(twist, palm))
            frames[1 + 3 * f + k] = np.stack([flex, np.cross(twist, flex), twist], axis=1)
    return frames


_OURS_TO_MANO = np.argsort(MANO_TO_OURS)  # MANO joint m is our joint _OURS_TO_MANO[m]
_MANO_BLOCKS = [int(_OURS_TO_MANO[m]) - 1 for m in range(1, 16)]  # our hand_pose block of MANO joint m
_OUR_BLOCKS = [MANO_TO_OURS[i] - 1 for i in range(1, 16)]  # MANO hand_pose block of our joint i


def to_mano_hand_pose(hand_pose: Any) -> Any:
    """Reorder ``hand_pose [..., 45]`` from our joint order to MANO's (index, middle, pinky, ring, thumb).

    Works on torch tensors and numpy arrays. The result is what ``smplx.MANO(flat_hand_mean=True,
    use_pca=False)`` expects; subtract ``hands_mean`` for ``flat_hand_mean=False`` layers.
    """
    shape = hand_pose.shape
    return hand_pose.reshape(*shape[:-1], 15, 3)[..., _MANO_BLOCKS, :].reshape(shape)


def from_mano_hand_pose(hand_pose: Any) -> Any:
    """Inverse of ``to_mano_hand_pose``: MANO-order ``[..., 45]`` axis-angles -> our order.

    MANO parameters published for ``flat_hand_mean=False`` need ``+ hands_mean`` (MANO order)
    first, since ``hand_pose = 0`` is the flat hand here.
    """
    shape = hand_pose.shape
    return hand_pose.reshape(*shape[:-1], 15, 3)[..., _OUR_BLOCKS, :].reshape(shape)


def build_smplx_mano(data: dict[str, np.ndarray], side: str, num_betas: int = 10, dtype: Any = None) -> Any:
    """The real ``smplx.MANO`` layer from pre-loaded MANO arrays (full 45-D pose, flat-hand mean).

    Its ``hand_pose`` uses MANO's joint order (index, middle, pinky, ring, thumb): convert a
    ``HandPose.hand_pose`` with ``to_mano_hand_pose``.
    """
    import torch
    from smplx import MANO
    from smplx.utils import Struct

    struct = Struct(**{k: v for k, v in data.items()})
    return MANO(
        model_path="",
        data_struct=struct,
        is_rhand=(side == "right"),
        use_pca=False,
        flat_hand_mean=True,
        num_betas=num_betas,
        dtype=dtype if dtype is not None else torch.float32,
    )
