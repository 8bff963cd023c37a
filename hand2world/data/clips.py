"""The clip format: sharded, random-access training clips with full ground truth.

One format for every source of training data: the synthetic world (``hand2world.world``)
writes it, and so will the annotation pipeline for real egocentric video.

Layout on disk (``root/``)::

    index.json                {"format": "hand2world-clips", "version": 1, "num_clips": N,
                               "shards": [{"file": "shard-00000.zip", "clips": n, "first": i0}, ...],
                               "split_names": ["train", ...], "splits": {"train": n_train, ...},
                               "actions": {"push": n_push, ...}}
    splits.npy                per-clip split codes (uint8 [N], indices into split_names), for filtering
    shard-00000.zip           clip i0 .. i0+n-1: members "00000000/video.npy", "00000000/meta.json", ...
    shard-00001.zip           ...

Design choices:
- Shards are plain zip files with one ``.npy`` member per array (``np.save`` bytes), deflated
  at level 1: a zip's central directory gives O(1) random access to any member, masks and
  the mostly-black control images shrink ~20x, and any tool can open them. ``N`` clips per
  shard (default 50) keeps millions of clips at tens of thousands of files.
- A shard is written to a temporary name and renamed when complete, so a shard on disk is
  always whole: interrupted runs resume by skipping shards that exist. Zip member times are
  fixed (1980-01-01), so the same clips give the same bytes.
- ``index.json`` is rebuilt from the shards' own ``meta.json`` members (``write_index``), so
  a shard is self-describing and the index never disagrees with the data. It stays small
  at any scale (shards and counts only); per-clip metadata lives in the shards and is read
  with the clip, and the one per-clip column a reader filters on (the split) is a uint8
  array in ``splits.npy`` (1 MB per million clips).
- ``ClipDataset`` is picklable and opens shard files lazily, once per process (the handle
  cache is dropped on pickling and re-opened after a fork), so a torch ``DataLoader`` with
  worker processes reads it directly. Depth is stored as float16 (metres; < 0.5 mm error
  at 1 m) and returned as float32.

Per-clip keys (``T`` frames, ``H x W`` pixels, hands indexed 0 = left, 1 = right):

=================  =====================  ==============================================================
key                dtype / shape          meaning
=================  =====================  ==============================================================
video              uint8 [T,H,W,3]        RGB frames
scene              uint8 [H,W,3]          the scene photo: the first camera's view of the scene without
                                          hands, forearms or their shadows (objects where they start);
                                          optional (real video has none): use ``scene_image(clip)``,
                                          which falls back to ``video[0]``
control            uint8 [T,H,W,3]        control render of the full hand meshes (nothing occludes it)
K                  float32 [3,3]          intrinsics (pixels of this resolution)
c2w                float32 [T,4,4]        camera-to-world per frame (OpenCV camera; world = source's frame)
joints3d           float32 [T,2,21,3]     MediaPipe-order joints in each frame's camera coords; NaN: absent
joints2d           float32 [T,2,21,2]     their projections with K (pixels; may fall outside the image)
hand_mask          bool [T,H,W]           pixels of the full hands (occlusion ignored)
visible_mask       bool [T,H,W]           hand pixels not hidden by anything (subset of hand_mask)
depth              float32 [T,H,W]        z-depth in metres of the nearest surface (0: nothing)
actions            float32 [T,138]        HandWorld layout: camera rotation 9-D (row-major) + translation
                                          3-D of c2w relative to frame 0, then 21x3 joints3d of the left
                                          and the right hand (zeros where absent)
hand_params        float32 [T,2,61]       HandPose vector (global_orient 3, hand_pose 45, betas 10,
                                          transl 3) in camera coordinates; NaN: absent
hands_present      bool [2]               which hands the clip has
object_poses       float32 [T,6,4,4]      object-to-world poses, padded to 6 objects with NaN
object_info        float32 [6,8]          kind id, size x/y/z (m), colour r/g/b (0..1), present flag
fps                float32 []             frames per second
action             str                    action label (e.g. "push"); see ``meta`` for the rest
split, seed, index str, int, int          provenance: split name, the seed that made it, global index
=================  =====================  ==============================================================

The clip's whole ``meta.json`` (action label, split, seed, source details) is
``ClipDataset.meta(i)``; it stays out of the item so torch's default collate works.

Sources without some ground truth (real video has no ``object_poses`` and no ``scene``) may
omit those keys; ``REQUIRED_KEYS`` are always present. ``scene_image`` is the one place that
decides what a clip's scene image is (its ``scene`` photo, else its first frame): training,
evaluation and generation call it rather than reading ``video[0]``.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "ACTION_DIM",
    "ARRAY_KEYS",
    "FORMAT",
    "MAX_OBJECTS",
    "REQUIRED_KEYS",
    "ClipDataset",
    "ClipWriter",
    "actions_from",
    "read_index",
    "scene_image",
    "shard_name",
    "validate_clip",
    "write_index",
    "write_shard",
]

FORMAT = "hand2world-clips"
VERSION = 1
ACTION_DIM = 138  # 9 + 3 + 2 * 21 * 3
MAX_OBJECTS = 6
INDEX = "index.json"
SPLITS = "splits.npy"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

REQUIRED_KEYS: tuple[str, ...] = (
    "video", "control", "K", "c2w", "joints3d", "joints2d", "hand_mask", "visible_mask", "depth", "actions",
)
ARRAY_KEYS: tuple[str, ...] = REQUIRED_KEYS + ("scene", "hand_params", "hands_present", "object_poses", "object_info")
_STORE_DTYPES = {"depth": np.float16}


def shard_name(k: int) -> str:
    """File name of shard ``k``: ``shard-00000.zip``."""
    return f"shard-{k:05d}.zip"


def actions_from(c2w: np.ndarray, joints3d: np.ndarray) -> np.ndarray:
    """HandWorld's 138-D per-frame action vector.

    Args:
        c2w: ``[T, 4, 4]`` camera-to-world.
        joints3d: ``[T, 2, 21, 3]`` camera-coordinate joints (NaN where a hand is absent).

    Returns:
        ``[T, 138]`` float32: rotation (row-major 3x3) and translation of ``inv(c2w[0]) @ c2w[t]``,
        then the left and the right hand's joints (zeros where absent).
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    rel = np.linalg.inv(c2w[0]) @ c2w
    joints = np.nan_to_num(np.asarray(joints3d, dtype=np.float64), nan=0.0)
    t = c2w.shape[0]
    return np.concatenate([rel[:, :3, :3].reshape(t, 9), rel[:, :3, 3], joints.reshape(t, -1)], axis=1).astype(
        np.float32)


def scene_image(clip: Any) -> Any:
    """The scene image of a clip: its ``scene`` photo when it has one, else its first frame.

    Args:
        clip: a clip (or a collated batch) with ``video [..., T, H, W, 3]`` and optionally
            ``scene [..., H, W, 3]`` (NumPy arrays or torch tensors).

    Returns:
        ``[..., H, W, 3]``: ``clip["scene"]`` or ``clip["video"][..., 0, :, :, :]``.
    """
    if "scene" in clip and clip["scene"] is not None:
        return clip["scene"]
    return clip["video"][..., 0, :, :, :]


def validate_clip(clip: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``clip`` has the required keys with consistent shapes and dtypes."""
    missing = [k for k in REQUIRED_KEYS if k not in clip]
    if missing:
        raise ValueError(f"clip lacks {missing}")
    video = np.asarray(clip["video"])
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [T,H,W,3], got {video.dtype} {video.shape}")
    t, h, w, _ = video.shape
    expect = {
        "control": ((t, h, w, 3), np.uint8), "K": ((3, 3), None), "c2w": ((t, 4, 4), None),
        "joints3d": ((t, 2, 21, 3), None), "joints2d": ((t, 2, 21, 2), None), "hand_mask": ((t, h, w), np.bool_),
        "visible_mask": ((t, h, w), np.bool_), "depth": ((t, h, w), None), "actions": ((t, ACTION_DIM), None),
    }
    if "scene" in clip:
        expect["scene"] = ((h, w, 3), np.uint8)
    for key, (shape, dtype) in expect.items():
        a = np.asarray(clip[key])
        if a.shape != shape:
            raise ValueError(f"{key} must have shape {shape}, got {a.shape}")
        if dtype is not None and a.dtype != dtype:
            raise ValueError(f"{key} must be {np.dtype(dtype).name}, got {a.dtype}")


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def write_shard(root: str | os.PathLike, k: int, clips: Sequence[dict[str, Any]], first: int,
                compresslevel: int = 1) -> Path:
    """Write clips ``first .. first + len(clips) - 1`` as shard ``k`` (atomically: temp file, then rename).

    Args:
        root: dataset folder (created if needed).
        k: shard number (file ``shard_name(k)``).
        clips: dicts with ``ARRAY_KEYS`` arrays (``REQUIRED_KEYS`` at least) and a ``meta`` dict
            (JSON-able: ``action``, ``split``, ``seed``, anything else the source records).
        first: global index of the first clip.
        compresslevel: zlib level of the deflated members (0 stores them).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / shard_name(k)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    method = zipfile.ZIP_DEFLATED if compresslevel > 0 else zipfile.ZIP_STORED
    with zipfile.ZipFile(tmp, "w") as zf:
        for offset, clip in enumerate(clips):
            validate_clip(clip)
            index = first + offset
            for key in ARRAY_KEYS:
                if key in clip:
                    a = np.asarray(clip[key])
                    a = a.astype(_STORE_DTYPES.get(key, a.dtype), copy=False)
                    info = zipfile.ZipInfo(f"{index:08d}/{key}.npy", _ZIP_TIME)
                    info.compress_type = method
                    zf.writestr(info, _npy_bytes(a), compress_type=method, compresslevel=compresslevel or None)
            meta = {**clip.get("meta", {}), "index": index}
            info = zipfile.ZipInfo(f"{index:08d}/meta.json", _ZIP_TIME)
            zf.writestr(info, json.dumps(meta, sort_keys=True), compress_type=zipfile.ZIP_STORED)
    os.replace(tmp, path)
    return path


def _shard_metas(path: Path) -> list[dict]:
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith("/meta.json"))
        return [json.loads(zf.read(n)) for n in names]


def write_index(root: str | os.PathLike, extra: dict | None = None) -> dict:
    """Rebuild ``root/index.json`` and ``root/splits.npy`` from the complete shards there; returns the index.

    Shards must hold consecutive clip indices (shard ``k`` starts where ``k - 1`` ended); a
    gap (a missing shard) is an error, so a partial dataset is never indexed as whole.
    """
    root = Path(root)
    shards, splits, actions, split_names = [], [], {}, {}
    total = 0
    for path in sorted(root.glob("shard-*.zip")):
        metas = _shard_metas(path)
        if not metas:
            continue
        first = metas[0]["index"]
        if first != total:
            raise ValueError(f"{path.name} starts at clip {first}, expected {total} (a shard is missing)")
        shards.append({"file": path.name, "first": first, "clips": len(metas)})
        total += len(metas)
        for m in metas:
            split, action = str(m.get("split", "")), str(m.get("action", ""))
            splits.append(split_names.setdefault(split, len(split_names)))
            actions[action] = actions.get(action, 0) + 1
    names = sorted(split_names, key=split_names.get)
    codes = np.asarray(splits, dtype=np.uint8)
    index = {"format": FORMAT, "version": VERSION, "num_clips": total, "shards": shards, "split_names": names,
             "splits": {n: int((codes == k).sum()) for k, n in enumerate(names)}, "actions": actions, **(extra or {})}
    (root / SPLITS).write_bytes(_npy_bytes(codes))
    tmp = root / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, sort_keys=True, indent=1))
    os.replace(tmp, root / INDEX)
    return index


def read_index(root: str | os.PathLike) -> dict:
    """Load and check ``root/index.json``."""
    path = Path(root) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"no clip dataset at {root} (missing {INDEX})")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} index")
    return index


class ClipWriter:
    """Sequential writer for sources that produce one clip at a time (e.g. the annotation pipeline).

    ``with ClipWriter(root) as w: w.add(clip)``; every ``shard_size`` clips a shard is written,
    and ``close`` writes the last partial shard and ``index.json``. Appends after existing shards.
    """

    def __init__(self, root: str | os.PathLike, shard_size: int = 50, compresslevel: int = 1) -> None:
        self.root = Path(root)
        self.shard_size = shard_size
        self.compresslevel = compresslevel
        self.root.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.root.glob("shard-*.zip"))
        self._shard = len(existing)
        self._next = sum(len(_shard_metas(p)) for p in existing)
        self._buffer: list[dict] = []

    def add(self, clip: dict[str, Any]) -> int:
        """Queue one clip (keys as in the module table, plus ``meta``); returns its global index."""
        validate_clip(clip)
        self._buffer.append(clip)
        index = self._next + len(self._buffer) - 1
        if len(self._buffer) >= self.shard_size:
            self._flush()
        return index

    def _flush(self) -> None:
        if self._buffer:
            write_shard(self.root, self._shard, self._buffer, self._next, self.compresslevel)
            self._shard += 1
            self._next += len(self._buffer)
            self._buffer = []

    def close(self) -> dict:
        self._flush()
        return write_index(self.root)

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClipDataset:
    """Random access to a clip dataset: ``ClipDataset(root)[i]`` -> dict of NumPy arrays (see module table).

    Args:
        root: the folder with ``index.json``.
        keys: load only these array keys (default: all stored); ``meta`` and labels always come.
        split: keep only clips whose ``split`` equals this.
    """

    def __init__(self, root: str | os.PathLike, keys: Iterable[str] | None = None, split: str | None = None) -> None:
        self.root = Path(root)
        index = read_index(self.root)
        self.shards = index["shards"]
        self._firsts = [s["first"] for s in self.shards]
        self.num_clips = int(index["num_clips"])
        self.ids: np.ndarray | None = None  # None: every clip, in order
        if split is not None:
            names = index.get("split_names", [])
            code = names.index(split) if split in names else -1
            self.ids = np.flatnonzero(np.load(self.root / SPLITS) == code)
        self.keys = tuple(keys) if keys is not None else None
        self._handles: dict[str, zipfile.ZipFile] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.num_clips if self.ids is None else len(self.ids)

    def _locate(self, i: int) -> tuple[int, zipfile.ZipFile]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range ({len(self)} clips)")
        i = i % len(self)
        index = i if self.ids is None else int(self.ids[i])
        shard = self.shards[bisect.bisect_right(self._firsts, index) - 1]
        return index, self._zip(shard["file"])

    def meta(self, i: int) -> dict:
        """The whole ``meta.json`` of item ``i`` (action, split, seed, source details)."""
        index, zf = self._locate(i)
        return json.loads(zf.read(f"{index:08d}/meta.json"))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _zip(self, name: str) -> zipfile.ZipFile:
        if self._pid != os.getpid():  # forked: file offsets are shared with the parent, re-open
            self._handles, self._pid = {}, os.getpid()
        zf = self._handles.get(name)
        if zf is None:
            zf = self._handles[name] = zipfile.ZipFile(self.root / name)
        return zf

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, zf = self._locate(i)
        prefix = f"{index:08d}/"
        out: dict[str, Any] = {}
        for key in self.keys or ARRAY_KEYS:
            try:
                data = zf.read(prefix + key + ".npy")
            except KeyError:
                if key in REQUIRED_KEYS:
                    raise
                continue
            a = np.load(io.BytesIO(data), allow_pickle=False)
            out[key] = a.astype(np.float32) if a.dtype == np.float16 else a
        meta = json.loads(zf.read(prefix + "meta.json"))
        out["action"] = str(meta.get("action", ""))
        out["split"] = str(meta.get("split", ""))
        out["seed"] = int(meta.get("seed", -1))
        out["index"] = index
        if "fps" in meta:
            out["fps"] = np.float32(meta["fps"])
        return out

    def close(self) -> None:
        for zf in self._handles.values():
            zf.close()
        self._handles = {}
