"""Clip format: write/read round trip, index, resume safety, DataLoader with workers, validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hand2world.data import (
    ClipDataset,
    ClipWriter,
    actions_from,
    scene_image,
    validate_clip,
    write_index,
    write_shard,
)


def _clip(rng: np.random.Generator, t: int = 3, h: int = 8, w: int = 10, action: str = "push") -> dict:
    joints3d = rng.normal(size=(t, 2, 21, 3)).astype(np.float32)
    joints3d[:, 0] = np.nan  # left hand absent
    c2w = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    c2w[:, 0, 3] = np.arange(t) * 0.01
    return {
        "video": rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8),
        "control": rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8),
        "K": np.eye(3, dtype=np.float32),
        "c2w": c2w,
        "joints3d": joints3d,
        "joints2d": joints3d[..., :2].copy(),
        "hand_mask": rng.random((t, h, w)) > 0.5,
        "visible_mask": rng.random((t, h, w)) > 0.7,
        "depth": rng.random((t, h, w)).astype(np.float32) + 0.5,
        "actions": actions_from(c2w, joints3d),
        "hands_present": np.array([False, True]),
        "meta": {"action": action, "split": "train", "seed": 7},
    }


def test_round_trip_and_index(tmp_path):
    rng = np.random.default_rng(0)
    clips = [_clip(rng, action=f"a{i}") for i in range(5)]
    with ClipWriter(tmp_path, shard_size=2) as writer:
        for c in clips:
            writer.add(c)
    assert sorted(p.name for p in tmp_path.glob("shard-*.zip")) == [f"shard-0000{k}.zip" for k in range(3)]
    ds = ClipDataset(tmp_path)
    assert len(ds) == 5
    for i, c in enumerate(clips):
        item = ds[i]
        assert item["action"] == f"a{i}" and item["split"] == "train" and item["seed"] == 7 and item["index"] == i
        for key in ("video", "control", "K", "c2w", "joints2d", "hand_mask", "visible_mask", "hands_present"):
            np.testing.assert_array_equal(item[key], c[key])
        np.testing.assert_array_equal(item["joints3d"], c["joints3d"])  # NaN positions equal too
        assert item["depth"].dtype == np.float32
        np.testing.assert_allclose(item["depth"], c["depth"], atol=1e-3)  # stored as float16
    assert "object_poses" not in ds[0]  # optional keys may be absent
    with pytest.raises(IndexError):
        ds[5]
    # appending continues the numbering
    with ClipWriter(tmp_path, shard_size=2) as writer:
        assert writer.add(_clip(rng, action="late")) == 5
    assert ClipDataset(tmp_path)[5]["action"] == "late"


def test_actions_layout():
    rng = np.random.default_rng(1)
    c = _clip(rng, t=4)
    a = c["actions"]
    assert a.shape == (4, 138)
    np.testing.assert_allclose(a[0, :9], np.eye(3).reshape(-1))  # relative to frame 0
    np.testing.assert_allclose(a[3, 9:12], [0.03, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(a[:, 12:75], 0)  # absent left hand -> zeros
    np.testing.assert_allclose(a[:, 75:], c["joints3d"][:, 1].reshape(4, -1), rtol=1e-6)


def test_split_filter_and_missing_shard(tmp_path):
    rng = np.random.default_rng(2)
    clips = [_clip(rng) for _ in range(4)]
    clips[1]["meta"]["split"] = clips[3]["meta"]["split"] = "test"
    write_shard(tmp_path, 0, clips[:2], first=0)
    write_shard(tmp_path, 1, clips[2:], first=2)
    index = write_index(tmp_path)
    assert index["splits"] == {"train": 2, "test": 2} and "clips" not in index  # small at any scale
    ds = ClipDataset(tmp_path, split="test", keys=["video"])
    assert len(ds) == 2 and [ds[i]["index"] for i in range(2)] == [1, 3]
    assert ds.meta(1) == {**clips[3]["meta"], "index": 3} and ds[-1]["index"] == 3
    assert len(ClipDataset(tmp_path, split="val")) == 0
    assert set(ds[0]) >= {"video", "action"} and "control" not in ds[0]
    (tmp_path / "shard-00000.zip").unlink()
    with pytest.raises(ValueError, match="missing"):
        write_index(tmp_path)


def test_same_clips_same_bytes(tmp_path):
    clips = [_clip(np.random.default_rng(3))]
    a = write_shard(tmp_path / "a", 0, clips, first=0).read_bytes()
    b = write_shard(tmp_path / "b", 0, clips, first=0).read_bytes()
    assert a == b


def test_validate_rejects_bad_shapes():
    c = _clip(np.random.default_rng(4))
    validate_clip(c)
    c["hand_mask"] = c["hand_mask"].astype(np.uint8)
    with pytest.raises(ValueError, match="hand_mask"):
        validate_clip(c)
    del c["depth"]
    with pytest.raises(ValueError, match="depth"):
        validate_clip(c)


def test_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    with ClipWriter(tmp_path, shard_size=2) as writer:
        for _ in range(4):
            writer.add(_clip(rng))
    ds = ClipDataset(tmp_path, keys=["video", "actions"])
    ds[0]  # an open handle in the parent must not leak into workers
    pickle.loads(pickle.dumps(ds))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["video"].shape == (2, 3, 8, 10, 3)
    assert batches[1]["index"].tolist() == [2, 3]


def test_scene_photo_round_trip_and_fallback(tmp_path):
    """A clip's ``scene`` photo is stored and read back; ``scene_image`` gives it, else frame 0 (real video),
    for single clips and collated batches alike; a scene of the wrong shape is refused."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    with_scene = _clip(rng)
    with_scene["scene"] = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8)
    without = _clip(rng)
    write_shard(tmp_path, 0, [with_scene, without], first=0)
    write_index(tmp_path)
    ds = ClipDataset(tmp_path)
    a, b = ds[0], ds[1]
    np.testing.assert_array_equal(a["scene"], with_scene["scene"])
    np.testing.assert_array_equal(scene_image(a), with_scene["scene"])
    assert not np.array_equal(scene_image(a), a["video"][0])
    assert "scene" not in b
    np.testing.assert_array_equal(scene_image(b), without["video"][0])
    batch = {"video": torch.as_tensor(np.stack([a["video"], b["video"]]))}
    assert torch.equal(scene_image(batch), batch["video"][:, 0])
    bad = _clip(rng)
    bad["scene"] = np.zeros((4, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="scene"):
        validate_clip(bad)
