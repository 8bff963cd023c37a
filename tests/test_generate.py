"""`hand2world generate` end to end on a tiny teacher trained in the test (npz gestures, a clip folder)."""

from __future__ import annotations

import json

import numpy as np

from hand2world.cli import main
from hand2world.generate import TeacherSampler
from hand2world.io import read_video, write_image
from hand2world.train import TeacherRunConfig, train_teacher
from hand2world.train.config import from_dict
from hand2world.train.data import ProceduralClips


def test_generate_from_npz_gestures(tmp_path, capsys):
    clips = ProceduralClips(n=2, frames=4, size=32)
    cfg = from_dict(TeacherRunConfig, {
        "model": {"preset": "tiny", "overrides": {"dim": 64, "num_heads": 2, "num_layers": 2, "ffn_dim": 128,
                                                  "freq_dim": 32, "camera_adapter_dim": 16}},
        "data": {"procedural_clips": 2, "frames": 4, "size": 32},
        "optim": {"steps": 2, "batch_size": 2, "ckpt_every": 100}, "out_dir": str(tmp_path / "run")})
    train_teacher(cfg, dataset=clips)
    sampler = TeacherSampler.from_checkpoint(tmp_path / "run")
    assert sampler.size == 32 and sampler.window == 4
    clip = ProceduralClips(n=1, frames=7, size=48, seed=5)[0]  # other size: resized to the model's
    np.savez(tmp_path / "g.npz", control=clip["control"], c2w=clip["c2w"], K=clip["K"])
    write_image(tmp_path / "scene.png", clip["video"][0])
    out = tmp_path / "gen.mp4"
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--scene", str(tmp_path / "scene.png"),
                 "--gestures", str(tmp_path / "g.npz"), "--out", str(out), "--steps", "2",
                 "--guidance-hands", "1.5"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["frames"] == 7  # two chained windows of 4 with one frame overlap
    video = read_video(out)
    assert video.shape == (7, 32, 64, 3)
