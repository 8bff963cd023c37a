"""`hand2world control` on the real cup video, and the CLI's error handling."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hand2world.cli import main
from hand2world.control_video import panel_size
from hand2world.io import read_video
from hand2world.render.colors import SIDE_COLORS


@pytest.mark.slow
def test_control_video_on_real_footage(cup_video, tmp_path, capsys):
    out = tmp_path / "cup.mp4"
    assert main(["control", "--video", str(cup_video), "--out", str(out), "--max-frames", "24", "--height", "144"]) == 0
    stats = json.loads(out.with_suffix(".json").read_text())
    assert stats["frames"] == 24 and stats["detection_rate"] >= 0.95
    assert set(stats["median_ms"]) == {"track", "fit+render", "compose+encode"}
    printed = json.loads(capsys.readouterr().out)
    assert printed["frames"] == 24

    video = read_video(out)
    w, h = panel_size(640, 480, 144)
    assert video.shape == (24, h, 4 * w, 3)
    control = video[:, :, 2 * w : 3 * w].astype(int)
    # the real (right) hand is drawn in the right-hand colour in the control panel
    fill = np.array(SIDE_COLORS["right"].fill)
    lit = control[control.sum(-1) > 120]
    assert len(lit) > 24 * 200
    assert np.median(np.abs(lit - fill * (lit.sum(-1, keepdims=True) / fill.sum())), axis=0).max() < 60
    # the mesh lies where MediaPipe saw the hand: the drawn skeleton (landmarks panel minus input)
    # falls on the (slightly dilated) control silhouette
    inp = video[:, :, :w].astype(int)
    drawn = np.abs(video[:, :, w : 2 * w].astype(int) - inp).sum(-1) > 150
    hand = control.sum(-1) > 60
    near = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for m in hand])
    assert drawn.sum() > 24 * 50
    assert (drawn & near).sum() / drawn.sum() > 0.8


def test_missing_video_is_a_clear_error(tmp_path, caplog):
    assert main(["control", "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "nope.mp4" in caplog.text


def test_bad_camera_trajectory_is_rejected(cup_video, tmp_path, caplog):
    bad = tmp_path / "c2w.npy"
    np.save(bad, np.zeros((5, 3, 4)))
    assert main(["control", "--video", str(cup_video), "--c2w", str(bad), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "[T, 4, 4]" in caplog.text


def test_bench_render_reports_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "render", "--iters", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["median_ms"] > 0 and result["threads"] == 1
    assert json.loads(capsys.readouterr().out)["median_ms"] == result["median_ms"]
