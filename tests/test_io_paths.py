"""Video I/O round trips and asset resolution."""

from __future__ import annotations

import numpy as np
import pytest

from hand2world import paths
from hand2world.io import VideoWriter, iter_frames, read_video, video_info, write_video


def test_video_round_trip_and_even_crop(tmp_path):
    frames = np.zeros((6, 33, 47, 3), np.uint8)
    for i in range(6):
        frames[i, :, : 8 * (i + 1)] = (200, 50, 20)
    path = write_video(tmp_path / "v.mp4", frames, fps=8)
    back = read_video(path)
    assert back.shape == (6, 32, 46, 3)
    # content survives the lossy codec: the red band grows frame by frame
    red = (back[..., 0].astype(int) - back[..., 2] > 100).sum(axis=(1, 2))
    assert np.all(np.diff(red) > 0)
    info = video_info(path)
    assert (info["width"], info["height"], info["frames"]) == (46, 32, 6)
    assert len(list(iter_frames(path, max_frames=2))) == 2


def test_writer_rejects_bad_frames(tmp_path):
    with VideoWriter(tmp_path / "x.mp4") as writer, pytest.raises(ValueError, match="uint8"):
        writer.write(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_missing_asset_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HAND2WORLD_HOME", str(tmp_path))
    with pytest.raises(paths.AssetMissingError, match="make setup"):
        paths.asset_path("hand_landmarker.task")
    assert paths.asset_path("cup.mp4", must_exist=False) == tmp_path / "data" / "cup.mp4"
    with pytest.raises(KeyError):
        paths.asset_path("no-such-asset")
