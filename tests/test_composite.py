"""The composite autoencoder: latents at x16, decoding over the warped scene photo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hand2world.geometry import intrinsics_from_fov
from hand2world.models import AUTOENCODER_PRESETS, build_autoencoder
from hand2world.models.composite import CompositeAutoencoder, composite_guide, warp_image

TINY = dataclasses.replace(AUTOENCODER_PRESETS["composite"], channels=(8, 8, 16), guide_channels=(4, 4, 8, 8))


def _frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_composite_shapes_and_factor() -> None:
    ae = build_autoencoder(AUTOENCODER_PRESETS["composite"]).eval().requires_grad_(False)
    assert isinstance(ae, CompositeAutoencoder) and ae.spatial_factor == 16 and ae.needs_guide
    x = _frames(2, 256)
    z = ae.encode_frames(x)
    assert z.shape == (2, 8, 16, 16)
    y = ae.decode_frames(z, composite_guide(x, torch.zeros_like(x)))
    assert y.shape == (2, 3, 256, 256) and float(y.abs().max()) <= 1.0
    video = x.unsqueeze(2).repeat(1, 1, 3, 1, 1)  # [B, 3, T, H, W]
    lat = ae.encode(video)
    assert lat.shape == (2, 8, 3, 16, 16)
    guide = torch.cat([video, torch.zeros_like(video)], 1)
    assert ae.decode(lat, guide).shape == video.shape
    with pytest.raises(ValueError, match="guide"):
        ae.decode_frames(z)
    with pytest.raises(ValueError, match="does not match"):
        ae.decode_frames(z, composite_guide(_frames(2, 128), _frames(2, 128)))


def test_alpha_zero_keeps_the_warped_photo_exactly() -> None:
    """Where the decoder's blending weight is 0 the output is the warped photo, pixel for pixel."""
    ae = CompositeAutoencoder(TINY).eval()
    with torch.no_grad():
        ae.head.bias[3] = -40.0
    photo, control = _frames(1, 64, 1), torch.zeros(1, 3, 64, 64)
    z = torch.randn(1, TINY.latent_channels, 8, 8)
    out = ae.decode_frames(z, composite_guide(photo, control))
    torch.testing.assert_close(out, photo, atol=1e-6, rtol=0)


def test_composite_learns_a_hand_over_the_photo() -> None:
    """A few steps teach it to paint the control render's pixels a colour while keeping the photo elsewhere:
    error in the hand region falls, and the background stays closer to the photo than the hand region is."""
    torch.manual_seed(0)
    ae = CompositeAutoencoder(TINY)
    photo = _frames(8, 64, 2)
    control = torch.full_like(photo, -1.0)
    control[:, :, 20:40, 24:44] = 1.0
    target = photo.clone()
    target[:, 0, 20:40, 24:44], target[:, 1:, 20:40, 24:44] = 0.6, -0.2  # a flat "hand"
    hand = torch.zeros(8, 1, 64, 64, dtype=torch.bool)
    hand[:, :, 20:40, 24:44] = True
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    errs = []
    for _ in range(60):
        rec, _, z = ae(target, composite_guide(photo, control), generator=g)
        loss = CompositeAutoencoder.reconstruction_loss(target, rec, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        errs.append(float((rec.detach() - target).abs().mul(hand).sum() / hand.sum() / 3))
    assert errs[-1] < 0.5 * errs[0]
    with torch.no_grad():
        rec = ae.decode_frames(ae.encode_frames(target), composite_guide(photo, control), normalized=False)
    bg = (rec - target).abs().mul(~hand).sum() / (~hand).sum() / 3
    assert float(bg) < 0.1


def test_warp_image_identity_and_rotation() -> None:
    K = intrinsics_from_fov(60.0, 32, 32)
    img = _frames(1, 32, 3)
    eye = torch.eye(4)[None, None].repeat(1, 2, 1, 1)
    out = warp_image(img, K, eye, 0.5)
    assert out.shape == (1, 3, 2, 32, 32)
    torch.testing.assert_close(out[:, :, 0], img, atol=1e-4, rtol=0)
    # a pure yaw of the camera shifts the image sideways (rotation is exact whatever the depth)
    a = np.deg2rad(5.0)
    R = torch.tensor([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], dtype=torch.float32)
    rel = torch.eye(4).repeat(1, 1, 1, 1)
    rel[0, 0, :3, :3] = R
    moved = warp_image(img, K, rel, 0.5)[:, :, 0]
    near = warp_image(img, K, rel, 5.0)[:, :, 0]
    torch.testing.assert_close(moved, near, atol=1e-4, rtol=0)
    assert float((moved - img).abs().mean()) > 0.05


def test_composite_config_is_validated() -> None:
    with pytest.raises(ValueError, match="guide_channels"):
        dataclasses.replace(TINY, guide_channels=(4, 4))
    with pytest.raises(ValueError, match="latent_dropout"):
        dataclasses.replace(TINY, latent_dropout=1.5)
    assert TINY.spatial_factor == 8 and AUTOENCODER_PRESETS["composite-guide-only"].latent_dropout == 1.0


def test_composite_autoencoder_trains_on_guides_and_releases_statistics(tmp_path) -> None:
    """The training task builds each frame's guide (scene warped into its camera + control render), the loss
    falls, and the release carries latent statistics; a composite run refuses control frames."""
    from hand2world.train import train_autoencoder
    from hand2world.train.config import AutoencoderRunConfig, from_dict
    from hand2world.train.data import ProceduralClips

    clips = ProceduralClips(n=4, frames=4, size=32)
    over = {"channels": [8, 8], "guide_channels": [4, 4, 8]}
    raw = {"model": {"preset": "composite", "overrides": over}, "data": {"size": 32}, "control_fraction": 0.0,
           "optim": {"steps": 50, "batch_size": 8, "lr": 3e-3, "warmup": 1, "ckpt_every": 1000, "log_every": 1},
           "stats_frames": 8, "hand_weight": 4.0, "out_dir": str(tmp_path / "ae")}
    out = train_autoencoder(from_dict(AutoencoderRunConfig, raw), dataset=clips)
    losses = [v for _, v in out["losses"]]
    assert len(losses) == 50 and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    from hand2world.models import load_config

    released = load_config(out["final"] / "config.json")
    assert released.kind == "composite" and len(released.latent_std) == 8 and out["psnr_db"] > 10
    with pytest.raises(ValueError, match="control_fraction"):
        from hand2world.train.autoencoder import AutoencoderTask

        AutoencoderTask(from_dict(AutoencoderRunConfig, {**raw, "control_fraction": 0.5}), dataset=clips)
    # the guide-only reference fine-tunes from it (same architecture, the latent dropped); another shape is refused
    ref = {**raw, "model": {"preset": "composite-guide-only", "overrides": over}, "init": str(out["final"]),
           "optim": {**raw["optim"], "steps": 2}, "out_dir": str(tmp_path / "ref")}
    task = AutoencoderTask(from_dict(AutoencoderRunConfig, ref), dataset=clips)
    assert task.config.latent_dropout == 1.0
    torch.testing.assert_close(task.model.head.weight,
                               load_file(str(out["final"] / "model.safetensors"))["head.weight"])
    with pytest.raises(ValueError, match="architecture"):
        AutoencoderTask(from_dict(AutoencoderRunConfig, {**ref, "model": {"preset": "composite-guide-only"}}),
                        dataset=clips)
    # a teacher on its latents carries the composite autoencoder (weights and config) in its release
    from hand2world.checkpoints import load_video_model
    from hand2world.train import train_teacher
    from hand2world.train.config import TeacherRunConfig

    tcfg = {"model": {"preset": "tiny", "overrides": {"dim": 32, "num_heads": 2, "num_layers": 1, "ffn_dim": 32,
                                                      "freq_dim": 16, "camera_adapter_dim": 8}},
            "autoencoder": str(out["final"]), "data": {"frames": 3, "size": 32},
            "optim": {"steps": 2, "batch_size": 2, "warmup": 1, "ckpt_every": 1000}, "out_dir": str(tmp_path / "t")}
    res = train_teacher(from_dict(TeacherRunConfig, tcfg), dataset=clips)
    _, ae, _, _ = load_video_model(res["final"])
    assert ae.needs_guide and ae.config == released
    mine = build_autoencoder(released)
    mine.load_state_dict(load_file(str(out["final"] / "model.safetensors")))
    for k, v in mine.state_dict().items():
        torch.testing.assert_close(ae.state_dict()[k], v)


def test_windows_of_a_clip_with_a_scene_photo_start_from_the_photo() -> None:
    """A clip with a scene photo gives windows as a live stream has them: frame 0 is the photo's latent with the
    empty control and the scene camera, then the clip's frames after the start with cameras relative to the
    photo's; a clip without one keeps its window's own first frame."""
    from hand2world.geometry import plucker_rays, relative_c2w
    from hand2world.models import DiTConfig
    from hand2world.train.data import ClipSource, ProceduralClips
    from hand2world.train.windows import LatentWindows

    base = ProceduralClips(n=2, frames=6, size=32)
    photo = np.full((32, 32, 3), 200, np.uint8)
    items = [{**base[0], "scene": photo}, base[1]]
    source = ClipSource(items, 32, 4)
    ae = build_autoencoder(dataclasses.replace(TINY, channels=(8, 8), guide_channels=(4, 4, 8))).eval()
    cfg = DiTConfig(latent_channels=8, dim=24, num_heads=2, num_layers=1, ffn_dim=32, freq_dim=16,
                    camera_adapter_dim=8, vae_factor=4, latent_size=(8, 8), scene_every_frame=True,
                    scene_warp_depth=0.5)
    win = LatentWindows(source, ae, cfg, torch.device("cpu"))
    x0, cond, hands = win.windows_with_hands([0, 1], [2, 2])
    assert x0.shape == (2, 8, 4, 8, 8)
    clip0 = source.clip(0)
    v_lat, c_lat = win.clip_latents(0)
    with torch.no_grad():
        want_scene = ae.encode(torch.from_numpy(photo).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1)[0, :, 0]
        black = ae.encode(torch.full((1, 3, 1, 32, 32), -1.0))[0, :, 0]
    torch.testing.assert_close(x0[0, :, 0], want_scene)
    torch.testing.assert_close(x0[0, :, 1:], v_lat[:, 3:6])
    torch.testing.assert_close(cond.control[0, :, 0], black)
    assert float(hands[0, 0].abs().max()) == 0.0
    rel = relative_c2w(torch.from_numpy(clip0["c2w"][[0, 3, 4, 5]]))
    torch.testing.assert_close(cond.rays[0], plucker_rays(torch.from_numpy(clip0["K"]), rel, 32, 32).transpose(0, 1))
    # the clip without a photo: its own frames 2..5, scene = frame 2
    v1, _ = win.clip_latents(1)
    torch.testing.assert_close(x0[1], v1[:, 2:6])
    assert not source.clip(1)["scene_photo"] and source.clip(0)["scene_photo"]
    w = source.window(0, 2)
    assert float(w["control"][:, 0].max()) == -1.0 and np.allclose(w["video"][:, 0].numpy(), 200 / 127.5 - 1)


def test_composite_student_streams_and_keeps_the_photo() -> None:
    """A student with a composite autoencoder streams through the one rollout; where its decoder's blending
    weight is 0 every output pixel is the scene photo warped into that frame's camera (static camera: the
    photo itself), whatever the DiT generated."""
    from hand2world.checkpoints import random_student
    from hand2world.models import DiTConfig, StreamConfig
    from hand2world.stream import StreamingGenerator

    cfg = DiTConfig(latent_channels=4, dim=48, num_heads=2, num_layers=2, ffn_dim=64, freq_dim=32, vae_factor=16,
                    camera_adapter_dim=16, cache_window=2, latent_size=(4, 4), scene_every_frame=True,
                    scene_warp_depth=0.5)
    model, ae = random_student(cfg, "composite")
    assert ae.needs_guide and ae.spatial_factor == 16
    with torch.no_grad():
        ae.head.bias[3] = -40.0
    gen = StreamingGenerator(model, ae, StreamConfig(steps=2))
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    control = np.zeros((5, 64, 64, 3), np.uint8)
    control[:, 20:40, 20:40] = (255, 140, 30)
    gen.start(photo)
    still = gen.step(control, np.tile(np.eye(4), (5, 1, 1)))
    assert still.shape == (5, 64, 64, 3) and still.dtype == np.uint8
    assert int(np.abs(still.astype(int) - photo).max()) <= 1
    # a turned head: the photo is warped (a pure yaw shifts it), not repeated
    c2w = np.tile(np.eye(4), (2, 1, 1))
    a = np.deg2rad(8.0)
    c2w[1, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    gen.reset()
    turned = gen.step(control[:2], c2w)
    assert int(np.abs(turned[0].astype(int) - photo).max()) <= 1
    assert np.abs(turned[1].astype(int) - photo).mean() > 10


def test_teacher_sampler_anchors_composite_windows_on_the_photo() -> None:
    """With a composite autoencoder the teacher samples every window from the scene photo: a zero-alpha
    decoder returns the photo in every frame of a static camera, across chained windows."""
    from hand2world.generate import TeacherSampler
    from hand2world.models import DiT, DiTConfig

    cfg = DiTConfig(latent_channels=4, dim=32, num_heads=2, num_layers=1, ffn_dim=32, freq_dim=16, vae_factor=16,
                    camera_adapter_dim=8, latent_size=(4, 4), scene_every_frame=True, scene_warp_depth=0.5)
    ae_cfg = dataclasses.replace(TINY, latent_channels=4, channels=(8, 8, 8, 8), guide_channels=(4, 4, 4, 8, 8))
    ae = build_autoencoder(ae_cfg).eval()
    with torch.no_grad():
        ae.head.bias[3] = -40.0
    sampler = TeacherSampler(DiT(cfg), ae, window=4)
    photo = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    control = np.zeros((9, 64, 64, 3), np.uint8)
    control[:, 10:30, 10:30] = 200
    out = sampler.generate(photo, control, steps=2)
    assert out.shape == (9, 64, 64, 3)
    assert int(np.abs(out.astype(int) - photo).max()) <= 1


def test_composite_recipe_configs_validate() -> None:
    """The v5 recipe's three configs load into their schemas and describe the shipped shape: a 256x256 teacher on
    the composite autoencoder, and a student distilled from it."""
    from pathlib import Path

    from hand2world.distill.config import DistillRunConfig
    from hand2world.distill.recipe import RECIPES
    from hand2world.train.config import AutoencoderRunConfig, TeacherRunConfig, load_run_config

    conf = Path(__file__).parent.parent / "configs"
    ae = load_run_config(conf / "autoencoder_composite.yaml", AutoencoderRunConfig)
    assert ae.autoencoder_config().kind == "composite" and ae.data.size == 256 and ae.control_fraction == 0
    teacher = load_run_config(conf / "teacher_composite.yaml", TeacherRunConfig)
    assert teacher.autoencoder == ae.out_dir and teacher.data.size == 256
    distill = load_run_config(conf / "distill_composite.yaml", DistillRunConfig)
    assert distill.teacher == teacher.out_dir
    assert RECIPES["composite"].size == 256


def test_v5_training_stages_load() -> None:
    """The committed v5 stages (weights/stages/v5) load through the one model-folder loader: the teacher carries
    the composite autoencoder of the autoencoder stage, and the reference is a guide-only composite decoder."""
    from pathlib import Path

    from hand2world.checkpoints import load_autoencoder, load_video_model

    root = Path(__file__).parent.parent / "weights" / "stages" / "v5"
    model, ae, stream, _ = load_video_model(root / "teacher")
    assert stream is None and ae.needs_guide and model.config.vae_factor == 16 and model.config.latent_size == (16, 16)
    stage = load_autoencoder(str(root / "autoencoder"))
    for k, v in stage.state_dict().items():
        torch.testing.assert_close(ae.state_dict()[k], v)
    ref = load_autoencoder(str(root / "reference"))
    assert ref.needs_guide and ref.config.latent_dropout == 1.0
