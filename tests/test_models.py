"""Video model on tiny CPU configs: shapes, block-causal semantics, KV cache, rotary, autoencoder."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import micro_dit

from hand2world.models import (
    DIT_PRESETS,
    AutoencoderConfig,
    Conditioning,
    DiT,
    DiTConfig,
    FrameAutoencoder,
    attention,
    available_backends,
    load_config,
    save_config,
    scene_channels,
)
from hand2world.models.attention import block_causal_mask
from hand2world.models.rope import RotaryEmbedding3D

# 2 layers, 2 heads, 16x16 latents (patch 2 -> 64 tokens per frame), x4 autoencoder factor.
CFG = micro_dit(latent_channels=4, vae_factor=4, frames_per_block=1, cache_window=3, cache_sink=1)


def _model(cfg: DiTConfig = CFG, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    model = DiT(cfg).eval()
    # The camera adapter is zero-initialised; give it weights so the tests exercise it.
    torch.nn.init.normal_(model.camera_adapter.out.weight, std=0.05)
    return model


def _inputs(b: int = 2, t: int = 4, cfg: DiTConfig = CFG, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c, s = cfg.latent_channels, cfg.vae_factor
    x = torch.randn(b, c, t, 16, 16, generator=g)
    cond = Conditioning(control=torch.randn(b, c, t, 16, 16, generator=g),
                        scene=scene_channels(torch.randn(b, c, 16, 16, generator=g), t),
                        rays=torch.randn(b, 6, t, 16 * s, 16 * s, generator=g))
    tt = torch.rand(b, t, generator=g)
    return x, tt, cond


def test_shapes_and_presets():
    model = _model()
    x, t, cond = _inputs()
    assert model(x, t[:, 0], cond).shape == x.shape
    assert model(x, t, cond, causal=True).shape == x.shape
    assert model(x, t[:, 0]).shape == x.shape  # no conditions at all
    tiny = DIT_PRESETS["tiny"]
    assert tiny.tokens_per_frame() == 64 and tiny.in_channels == 25


def test_block_causal_ignores_later_blocks():
    cfg = dataclasses.replace(CFG, frames_per_block=2)
    model = _model(cfg)
    x, t, cond = _inputs(t=6, cfg=cfg)
    out = model(x, t, cond, causal=True)
    x2, cond2 = x.clone(), Conditioning(control=cond.control.clone(), scene=cond.scene, rays=cond.rays.clone())
    # blocks: {0} (scene), {1, 2}, {3, 4}, {5}; change from block 2 (frames 3, 4) on
    x2[:, :, 3:] = torch.randn_like(x2[:, :, 3:])
    cond2.control[:, :, 3:] += 1.0
    cond2.rays[:, :, 3:] += 1.0
    t2 = t.clone()
    t2[:, 3:] = 0.9
    out2 = model(x2, t2, cond2, causal=True)
    assert torch.allclose(out[:, :, :3], out2[:, :, :3], atol=1e-5)
    assert not torch.allclose(out[:, :, 3:], out2[:, :, 3:], atol=1e-3)


def test_bidirectional_differs_from_causal():
    model = _model()
    x, t, cond = _inputs()
    bi, ca = model(x, t, cond), model(x, t, cond, causal=True)
    assert (bi[:, :, :-1] - ca[:, :, :-1]).abs().amax(dim=(0, 1, 3, 4)).min() > 1e-3  # every early frame differs


def test_kv_cache_rollout_equals_block_causal_forward():
    for fpb in (1, 2):
        cfg = dataclasses.replace(CFG, frames_per_block=fpb)
        model = _model(cfg)
        x, t, cond = _inputs(t=6, cfg=cfg)
        with torch.no_grad():
            full = model(x, t, cond, causal=True)
            cache = model.new_kv_cache(batch=2, latent_hw=(16, 16), capacity_frames=6)
            outs = []
            for s in [0, *range(1, 6, fpb)]:  # the scene frame alone, then blocks
                e = 1 if s == 0 else min(s + fpb, 6)
                blk = slice(s, e)
                # an uncommitted pass (a denoising step) must not change the context
                model(torch.randn_like(x[:, :, blk]), t[:, blk], cond.frames(s, e), kv_cache=cache)
                outs.append(model(x[:, :, blk], t[:, blk], cond.frames(s, e), kv_cache=cache, commit=True))
        diff = (torch.cat(outs, dim=2) - full).abs().max().item()
        assert diff <= 1e-4, (fpb, diff)
        assert cache.frames == 6


def test_kv_cache_eviction_keeps_sink_and_repositions():
    model = _model()
    x, t, cond = _inputs(t=6)
    cache = model.new_kv_cache(batch=2, latent_hw=(16, 16))  # sink 1 + window 3 + block 1 = 5 frames
    assert cache.capacity_frames == 5
    n = cache.tokens_per_frame
    with torch.no_grad():
        for s in range(4):
            model(x[:, :, s:s + 1], t[:, s:s + 1], cond.frames(s, s + 1), kv_cache=cache, commit=True)
        sink_k = cache.k[0][:, :, :n].clone()
        last_v = cache.v[1][:, :, 3 * n:4 * n].clone()
        last_k = cache.k[1][:, :, 3 * n:4 * n].clone()
        model(x[:, :, 4:5], t[:, 4:5], cond.frames(4, 5), kv_cache=cache, commit=True)  # 5 frames: full
        with pytest.raises(RuntimeError):
            model(x[:, :, 5:6], t[:, 5:6], cond.frames(5, 6), kv_cache=cache)
        assert cache.evict(window=2, sink=1) == 2
        assert cache.frames == 3 and cache.next_position == 3 and cache.seen_frames == 5
        assert torch.equal(cache.k[0][:, :, :n], sink_k)  # sink untouched
        # frame 3 moved to slot 1, its keys re-rotated by -2 frames
        assert torch.equal(cache.v[1][:, :, n:2 * n], last_v)
        assert torch.allclose(cache.k[1][:, :, n:2 * n], model.rope.shift_frames(last_k, -2.0), atol=1e-6)
        out = model(x[:, :, 5:6], t[:, 5:6], cond.frames(5, 6), kv_cache=cache, commit=True)
    assert out.shape == (2, 4, 1, 16, 16) and torch.isfinite(out).all()


def test_rope_shift_equals_rotation_at_new_position():
    rope = RotaryEmbedding3D(head_dim=32)
    q = torch.randn(1, 2, 3 * 4 * 4, 32)
    cos5, sin5 = rope.tables(torch.tensor([5.0, 6.0, 7.0]), 4, 4)
    cos2, sin2 = rope.tables(torch.tensor([2.0, 3.0, 4.0]), 4, 4)
    shifted = rope.shift_frames(RotaryEmbedding3D.apply(q, cos5, sin5), -3.0)
    assert torch.allclose(shifted, RotaryEmbedding3D.apply(q, cos2, sin2), atol=1e-5)


def test_attention_backends_agree():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 12, 8, generator=g) for _ in range(3))
    blocks = torch.arange(12) // 4
    mask = block_causal_mask(blocks, blocks)
    for m in (None, mask):
        ref = attention(q, k, v, m, backend="math")
        assert torch.allclose(attention(q, k, v, m, backend="sdpa"), ref, atol=1e-5)
        if "flex" in available_backends():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # eager flex on CPU warns that it is unfused
                assert torch.allclose(attention(q, k, v, m, backend="flex"), ref, atol=1e-5)


def test_attention_backend_is_per_model(monkeypatch):
    """Two models in one process hold different backends; setting one leaves the other alone."""
    a, b = _model(), _model()
    a.attention_backend = "math"
    assert a.attention_backend == "math" and b.attention_backend == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend"):
        b.attention_backend = "nope"
    used = []
    real = attention
    monkeypatch.setattr("hand2world.models.dit.attention", lambda *args, **kw: used.append(
        kw.get("backend", args[4] if len(args) > 4 else None)) or real(*args, **kw))
    x, t, cond = _inputs()
    out_a = a(x, t, cond)
    assert set(used) == {"math"}
    used.clear()
    out_b = b(x, t, cond)
    assert set(used) == {"sdpa"}
    assert torch.allclose(out_a, out_b, atol=1e-5)  # same weights, backends agree


def test_guidance_dropout_masks():
    model = _model()
    x, t, cond = _inputs()
    keep = dataclasses.replace(cond, keep_hands=torch.ones(2), keep_camera=torch.ones(2))
    assert torch.allclose(model(x, t, cond), model(x, t, keep), atol=1e-6)
    no_cam = dataclasses.replace(cond, keep_camera=torch.tensor([1.0, 0.0]))
    ref = dataclasses.replace(cond, rays=None)
    out, out_ref = model(x, t, no_cam), model(x, t, ref)
    assert torch.allclose(out[1], out_ref[1], atol=1e-5) and not torch.allclose(out[0], out_ref[0], atol=1e-4)
    no_hands = dataclasses.replace(cond, keep_hands=torch.zeros(2))
    zero_ctl = dataclasses.replace(cond, control=torch.zeros_like(cond.control))
    assert torch.allclose(model(x, t, no_hands), model(x, t, zero_ctl), atol=1e-6)


def test_camera_adapter_is_zero_at_init():
    torch.manual_seed(0)
    model = DiT(CFG).eval()
    x, t, cond = _inputs()
    assert torch.equal(model(x, t, cond), model(x, t, dataclasses.replace(cond, rays=None)))


def test_autoencoder_shapes_and_config_roundtrip(tmp_path):
    cfg = AutoencoderConfig(latent_channels=4, channels=(8, 16), blocks_per_level=1)
    ae = FrameAutoencoder(cfg).eval()
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    z = ae.encode(video)
    assert z.shape == (2, 4, 3, 8, 8)
    rec = ae.decode(z)
    assert rec.shape == video.shape and rec.abs().max() <= 1
    # per-frame: a frame's decode does not depend on the others (streaming never re-decodes history)
    assert torch.allclose(ae.decode(z[:, :, 1:2])[:, :, 0], rec[:, :, 1], atol=1e-5)
    assert load_config(save_config(cfg, tmp_path / "ae.json")) == cfg
    assert load_config(save_config(CFG, tmp_path / "dit.json")) == CFG


def test_scene_warp_follows_the_camera():
    """The warped scene: identity poses keep it; a yaw equals the rotation homography; a sideways move
    shifts points on the plane by f t / depth; scene_latents warps only when the config asks."""
    import cv2
    import numpy as np

    from hand2world.geometry import intrinsics_from_fov
    from hand2world.models import scene_latents, warp_scene_latent

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic")
    K = intrinsics_from_fov(60.0, 64, 64).float()
    eye = torch.eye(4).expand(1, 3, 4, 4)
    assert torch.allclose(warp_scene_latent(img, K, eye, 0.5, 1), img[:, :, None].expand(1, 3, 3, 64, 64), atol=1e-4)

    yaw = np.deg2rad(4.0)
    rel = torch.eye(4).repeat(1, 2, 1, 1)
    rel[0, 1, :3, :3] = torch.tensor([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    out = warp_scene_latent(img, K, rel, 0.5, 1)[0, :, 1].permute(1, 2, 0).numpy()
    Rj = rel[0, 1, :3, :3].numpy().T  # scene camera -> camera j
    S = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])  # K's pixel centres at i + 0.5 -> OpenCV's at i
    H = S @ K.numpy() @ Rj @ np.linalg.inv(K.numpy()) @ np.linalg.inv(S)
    ref = cv2.warpPerspective(img[0].permute(1, 2, 0).numpy(), H, (64, 64), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(out - ref)[8:-8, 8:-8].max() < 0.02

    rel = torch.eye(4).repeat(1, 2, 1, 1)
    rel[0, 1, 0, 3] = 0.05  # camera 5 cm to the right: the plane at 0.5 m moves f * 0.1 px to the left
    shift = float(K[0, 0]) * 0.05 / 0.5
    out = warp_scene_latent(img, K, rel, 0.5, 1)[0, :, 1]
    M = np.float32([[1, 0, -shift], [0, 1, 0]])
    ref = cv2.warpAffine(img[0].permute(1, 2, 0).numpy(), M, (64, 64), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(out.permute(1, 2, 0).numpy() - ref)[:, :40].max() < 0.02

    lat = torch.randn(1, 4, 16, 16)
    assert scene_latents(CFG, lat, K, rel) is lat  # CFG: no warp
    warped = scene_latents(dataclasses.replace(CFG, scene_every_frame=True, scene_warp_depth=0.5), lat, K, rel)
    assert warped.shape == (1, 4, 2, 16, 16) and not torch.allclose(warped[:, :, 1], lat)
    assert scene_channels(warped, 2, every_frame=True).shape == (1, 5, 2, 16, 16)
    with pytest.raises(ValueError, match="scene_every_frame"):
        DiTConfig(scene_warp_depth=0.5)
