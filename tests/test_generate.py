"""`hand2world generate` end to end on a tiny teacher trained in the test (npz gestures, a clip folder)."""

from __future__ import annotations

import json

import numpy as np
from conftest import MICRO_DIT

from hand2world.cli import main
from hand2world.generate import TeacherSampler
from hand2world.io import read_video, write_image
from hand2world.train import TeacherRunConfig, train_teacher
from hand2world.train.config import from_dict
from hand2world.train.data import ProceduralClips


def test_generate_from_npz_gestures(tmp_path, capsys):
    clips = ProceduralClips(n=2, frames=4, size=32)
    cfg = from_dict(TeacherRunConfig, {
        "model": {"preset": "tiny", "overrides": MICRO_DIT},
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


def test_generate_defaults_to_the_shipped_student(tmp_path, capsys, cup_video):
    """`hand2world generate --scene photo --gestures video --out out.mp4` with no model flag streams the
    shipped student (weights/default), as `serve` does; the MP4 is generated | control side by side."""
    from hand2world.models import load_config
    from hand2world.paths import weights_dir

    cfg = load_config(weights_dir() / "default" / "config.json")
    size = cfg.latent_size[0] * cfg.vae_factor
    photo = tmp_path / "photo.png"
    write_image(photo, read_video(cup_video, max_frames=1)[0])
    out = tmp_path / "out.mp4"
    assert main(["generate", "--scene", str(photo), "--gestures", str(cup_video), "--out", str(out),
                 "--max-frames", "3"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["frames"] == 3 and stats["size"] == size
    assert read_video(out).shape == (3, size, 2 * size, 3)


def test_generate_rejects_two_models(tmp_path):
    assert main(["generate", "--checkpoint", "x", "--student", "y", "--gestures", "g.npz",
                 "--out", str(tmp_path / "o.mp4")]) == 2
