"""StreamingGenerator: cached rollout == block-causal forward, eviction/sink, flat memory, errors, loader, bench."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import micro_dit

from hand2world.checkpoints import (
    ChecksumError,
    load_video_model,
    random_student,
    write_checksums,
    write_student_release,
)
from hand2world.models import DIT_PRESETS, DiTConfig
from hand2world.models.config import StreamConfig
from hand2world.stream import StreamingGenerator

SMALL = micro_dit(latent_channels=4, dim=48, ffn_dim=64, vae_factor=4, frames_per_block=2, cache_window=8,
                  cache_sink=1, latent_size=(8, 8), scene_every_frame=True)  # 32x32 frames, 16 tokens per latent frame


def _student(config: DiTConfig = SMALL, seed: int = 0):
    model, ae = random_student(config, "tiny", seed=seed)
    if model.camera_adapter is not None:  # zero-initialised: give it weights so the rays matter in the tests
        torch.nn.init.normal_(model.camera_adapter.out.weight, std=0.02)
    return model, ae


def _gen(config: DiTConfig = SMALL, **stream) -> StreamingGenerator:
    model, ae = _student(config)
    return StreamingGenerator(model, ae, StreamConfig(**{"steps": 3, "stochastic": False, **stream}))


def _inputs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)  # not the model size: cropped/resized
    control = np.zeros((n, size, size, 3), np.uint8)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        if i % 3:  # some frames with a "hand", some empty (cached empty control latent)
            y, x = rng.integers(0, size - 8, 2)
            control[i, y:y + 8, x:x + 8] = (255, 140, 30)
        c2w[i, :3, 3] = [0.02 * i, 0.0, 0.01 * i]
        a = 0.05 * i
        c2w[i, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    return scene, control, c2w


class Recorder:
    """Wraps ``model.forward`` and records every call the rollout makes."""

    def __init__(self, model) -> None:
        self.calls: list[dict] = []
        self.forward = model.forward

        def forward(x, t, cond=None, **kw):
            out = self.forward(x, t, cond, **kw)
            self.calls.append({"x": x.clone(), "t": t.clone(), "cond": cond, "commit": kw.get("commit", False),
                               "out": out.clone()})
            return out
        model.forward = forward


def _cat_cond(conds):
    from hand2world.models import Conditioning

    def cat(name):
        return torch.cat([getattr(c, name) for c in conds], dim=2)
    return Conditioning(control=cat("control"), scene=cat("scene"), rays=cat("rays"))


def test_cached_stream_equals_one_block_causal_forward():
    """Every pass of the cached rollout equals the block-causal forward over the whole sequence.

    Deterministic sampler (``stochastic=False``). The committed (t = 0) passes of the scene and all
    blocks are compared against ONE ``causal=True`` forward over the clean sequence (per-frame t = 0);
    each denoising step of block k against a ``causal=True`` forward over [clean context, noisy
    block k] (frames after k cannot matter: the mask is block-causal). Frames returned by ``step``
    are the decoded committed latents (streaming decode).
    """
    gen = _gen()
    rec = Recorder(gen.model)
    scene, control, c2w = _inputs(8)
    gen.start(scene)
    frames = np.concatenate([gen.step(control[i:i + 2], c2w[i:i + 2]) for i in range(0, 8, 2)])
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    assert gen.cache.frames == 9  # scene + 8 frames, no eviction at this length
    commits = [c for c in rec.calls if c["commit"]]
    assert len(commits) == 5 and len(rec.calls) == 5 + 4 * 3
    model = gen.model
    with torch.no_grad():
        x_all = torch.cat([c["x"] for c in commits], dim=2)  # [1, C, 9, h, w] clean latents
        cond_all = _cat_cond([c["cond"] for c in commits])
        full = model.forward(x_all, torch.zeros(1, 9), cond_all, causal=True)
        streamed = torch.cat([c["out"] for c in commits], dim=2)
        assert (full - streamed).abs().max().item() <= 1e-4
        # denoising steps: [scene + clean blocks < k, noisy block k at t_i]
        i_call, worst = 1, 0.0
        for k in range(4):
            prefix = 1 + 2 * k
            for t in gen.timesteps:
                c = rec.calls[i_call]
                assert not c["commit"] and abs(c["t"].item() - t) < 1e-7
                seq = torch.cat([x_all[:, :, :prefix], c["x"]], dim=2)
                ts = torch.tensor([[0.0] * prefix + [t] * 2])
                ref = model.forward(seq, ts, _cat_cond([cm["cond"] for cm in commits[:k + 1]] + [c["cond"]]),
                                    causal=True)[:, :, -2:]
                worst = max(worst, (ref - c["out"]).abs().max().item())
                i_call += 1
            # the committed latents are the last step's x0 prediction
            last = rec.calls[i_call - 1]
            x0 = last["x"] - gen.timesteps[-1] * last["out"]
            assert torch.allclose(rec.calls[i_call]["x"], x0, atol=1e-6)
            i_call += 1
        assert worst <= 1e-4
        decoded = gen.ae.decode_frames(x_all[0, :, 1:].transpose(0, 1))
        expect = decoded.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(frames, expect)


def test_stream_is_reproducible_and_reset_restarts():
    gen = _gen(stochastic=True)
    scene, control, c2w = _inputs(4)
    gen.start(scene)
    a = np.concatenate([gen.step(control[i:i + 2], c2w[i:i + 2]) for i in (0, 2)])
    gen.reset()
    b = np.concatenate([gen.step(control[i:i + 2], c2w[i:i + 2]) for i in (0, 2)])
    assert np.array_equal(a, b)
    assert gen.cache.seen_frames == 5


def test_eviction_keeps_sink_and_shifts_window_across_a_long_stream():
    cfg = dataclasses.replace(SMALL, cache_window=3, frames_per_block=1)
    gen = _gen(cfg, steps=1)
    scene, control, c2w = _inputs(40)
    gen.start(scene)
    cache = gen.cache
    n = cache.tokens_per_frame
    sink_k = [k[:, :, :n].clone() for k in cache.k]
    sink_v = [v[:, :, :n].clone() for v in cache.v]
    assert cache.capacity_frames == 1 + 3 + 1
    evictions = []
    orig = cache.evict

    def evict(window, sink=1):
        before = cache.frames
        old_k = [k[:, :, :before * n].clone() for k in cache.k]
        old_v = [v[:, :, :before * n].clone() for v in cache.v]
        drop = orig(window, sink)
        assert (window, sink) == (3, 1) and before + 1 > cache.capacity_frames  # only when the block does not fit
        assert cache.frames == sink + window and drop == before - sink - window
        for layer in range(len(cache.k)):
            kept_k = old_k[layer][:, :, (sink + drop) * n:]
            assert torch.allclose(cache.k[layer][:, :, sink * n:(sink + window) * n],
                                  cache.rope.shift_frames(kept_k, -float(drop)), atol=1e-5)
            moved = cache.v[layer][:, :, sink * n:(sink + window) * n]
            assert torch.equal(moved, old_v[layer][:, :, (sink + drop) * n:])
        evictions.append(drop)
        return drop
    cache.evict = evict
    ptrs = [t.data_ptr() for t in cache.k + cache.v]
    for i in range(40):
        frame = gen.step(control[i:i + 1], c2w[i:i + 1])
        assert frame.shape == (1, 32, 32, 3)
        assert cache.frames <= cache.capacity_frames and cache.next_position <= 1 + 3 + 1
    assert len(evictions) == 40 - 4 and all(d == 1 for d in evictions)  # full after 4 frames, then 1 dropped per step
    assert cache.seen_frames == 41 and cache.frames == 1 + 3 + 1
    assert [t.data_ptr() for t in cache.k + cache.v] == ptrs  # storage never reallocated
    for layer in range(len(cache.k)):  # the scene frame (sink) is never touched
        assert torch.equal(cache.k[layer][:, :, :n], sink_k[layer])
        assert torch.equal(cache.v[layer][:, :, :n], sink_v[layer])


def _rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_memory_flat_over_1000_frames_tiny():
    """The ``tiny`` preset (architecture, cache window/sink), frame-wise, 1 step: 1,000 frames at constant memory.

    Run at 64x64 instead of its 128x128 to keep the test fast (the cache and the code path are the same).
    """
    model, ae = random_student(DIT_PRESETS["tiny"], "tiny")
    gen = StreamingGenerator(model, ae, StreamConfig(steps=1), height=64, width=64)
    scene = np.full((128, 128, 3), 90, np.uint8)
    control = np.zeros((1, 64, 64, 3), np.uint8)
    control[0, 20:35, 25:40] = (255, 140, 30)
    gen.start(scene)
    cache = gen.cache
    ptrs = [t.data_ptr() for t in cache.k + cache.v]
    nbytes = gen.memory()["kv_cache_bytes"]
    rss = []
    for i in range(1000):
        c2w = np.eye(4)
        c2w[0, 3] = 0.001 * i
        gen.step(control if i % 2 else control * 0, c2w[None])
        if i in (100, 999):
            rss.append(_rss_mb())
    assert cache.seen_frames == 1001 and cache.frames <= cache.capacity_frames
    assert [t.data_ptr() for t in cache.k + cache.v] == ptrs and gen.memory()["kv_cache_bytes"] == nbytes
    assert rss[1] - rss[0] < 30, rss


def test_clear_errors(tmp_path):
    gen = _gen()
    with pytest.raises(RuntimeError, match="start"):
        gen.step(np.zeros((2, 32, 32, 3), np.uint8), np.tile(np.eye(4), (2, 1, 1)))
    with pytest.raises(ValueError, match="uint8"):
        gen.start(np.zeros((32, 32, 3), np.float32))
    gen.start(np.zeros((20, 30, 3), np.uint8))
    eye2 = np.tile(np.eye(4), (2, 1, 1))
    with pytest.raises(ValueError, match=r"uint8 \[T, 32, 32, 3\].*float32"):
        gen.step(np.zeros((2, 32, 32, 3), np.float32), eye2)
    with pytest.raises(ValueError, match=r"\[T, 32, 32, 3\].*\(2, 64, 64, 3\)"):
        gen.step(np.zeros((2, 64, 64, 3), np.uint8), eye2)
    with pytest.raises(ValueError, match=r"\[T, 4, 4\] with T = 2"):
        gen.step(np.zeros((2, 32, 32, 3), np.uint8), np.eye(4)[None])
    with pytest.raises(ValueError, match="multiple of 2"):
        gen.step(np.zeros((3, 32, 32, 3), np.uint8), np.tile(np.eye(4), (3, 1, 1)))
    with pytest.raises(ValueError, match="3x3"):
        gen.start(np.zeros((32, 32, 3), np.uint8), K=np.eye(4))
    with pytest.raises(FileNotFoundError, match=r"no_such_student.*hand2world distill"):
        StreamingGenerator.from_pretrained(tmp_path / "no_such_student")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        StreamingGenerator.from_pretrained(tmp_path / "empty")
    wan_like = dataclasses.replace(SMALL, vae_temporal_factor=4)
    with pytest.raises(NotImplementedError, match="temporal"):
        StreamingGenerator(*_student(wan_like))


def test_scene_crop_adjusts_K_and_scene_pose():
    gen = _gen()
    K = np.array([[50.0, 0, 40], [0, 50.0, 24], [0, 0, 1]])
    gen.start(np.zeros((48, 80, 3), np.uint8), scene_K=K)  # 48x80 -> 32x53 -> crop 32x32 at x0 = 10
    sx, sy = 53 / 80, 32 / 48
    assert np.allclose(gen.K, [[50 * sx, 0, 40 * sx - 10], [0, 50 * sy, 24 * sy], [0, 0, 1]], atol=1e-6)
    gen.start(np.zeros((32, 32, 3), np.uint8), K=K)
    assert np.allclose(gen.K, K)
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    gen.start(np.zeros((32, 32, 3), np.uint8), K=K, scene_c2w=pose)
    rec = Recorder(gen.model)
    gen.step(np.zeros((2, 32, 32, 3), np.uint8), np.stack([pose, pose]))
    rays = rec.calls[0]["cond"].rays  # the scene pose again: identity relative camera
    from hand2world.geometry import plucker_rays

    ident = plucker_rays(torch.from_numpy(K).float(), torch.eye(4), 32, 32)
    assert torch.allclose(rays[0, :, 0], ident, atol=1e-5)


def test_release_loader_and_checksums(tmp_path):
    model, ae = _student()
    folder = write_student_release(tmp_path / "student", model, ae, StreamConfig(steps=2))
    assert (folder / "checksums.json").is_file()
    dit, ae2, stream, run = load_video_model(folder)
    assert stream == StreamConfig(steps=2) and run == {"kind": "student"}
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), model.state_dict().values(), strict=True))
    gen = StreamingGenerator.from_pretrained(folder, steps=1)
    assert gen.stream.steps == 1 and (gen.height, gen.width) == (32, 32)
    from hand2world.generate import TeacherSampler

    assert TeacherSampler.from_checkpoint(folder).window == 9  # the teacher path shares the loader
    # corrupt one byte of the weights: a clear error naming the file
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="model.safetensors"):
        load_video_model(folder)
    load_video_model(folder, verify=False)  # explicit opt-out still loads
    write_checksums(folder)
    load_video_model(folder)
    (folder / "stream.json").unlink()
    with pytest.raises(ChecksumError, match="stream.json.*missing"):
        load_video_model(folder)


def test_generate_student_writes_mp4(tmp_path):
    from hand2world.generate import run_generate_student

    model, ae = _student()
    folder = write_student_release(tmp_path / "student", model, ae, StreamConfig(steps=1))
    _, control, c2w = _inputs(6)
    np.savez(tmp_path / "g.npz", control=control, c2w=c2w.astype(np.float32))
    import cv2

    cv2.imwrite(str(tmp_path / "scene.png"), np.full((40, 50, 3), 120, np.uint8))
    out = run_generate_student(str(folder), str(tmp_path / "g.npz"), str(tmp_path / "o.mp4"),
                               scene=str(tmp_path / "scene.png"))
    assert out["frames"] == 5 and out["block"] == 2  # scene + 2 blocks; one trailing frame dropped
    assert (tmp_path / "o.mp4").stat().st_size > 0


def test_bench_stream_smoke(tmp_path):
    from hand2world.stream.cli import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    register(sub, bench)
    out = tmp_path / "b.json"
    args = parser.parse_args(["bench", "stream", "--size", "32x32", "--steps", "2", "--block", "1", "--frames", "3",
                              "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert args.func(args) == 0
    res = json.loads(out.read_text())
    for key in ("fps", "step_p50_ms", "step_p95_ms", "stages_median_ms", "memory", "frames"):
        assert key in res
    assert set(res["stages_median_ms"]) == {"encode", "denoise", "commit", "decode"}
    assert res["frames"] == 3 and res["memory"]["peak_rss_mb"] > 0
    # the composite autoencoder (x16, decoded over the warped photo) at 64x64
    args = parser.parse_args(["bench", "stream", "--size", "64x64", "--steps", "2", "--block", "1", "--frames", "2",
                              "--warmup", "1", "--threads", "1", "--autoencoder", "composite", "--json", str(out)])
    assert args.func(args) == 0
    assert json.loads(out.read_text())["frames"] == 2


def test_wan_shaped_student_streams_non_square_blocks_of_3():
    """The ``wan-1.3b`` layout (16 channels, text cross-attention, blocks of 3, window 9) at a non-square size.

    Narrowed (2 layers, width 96) to run on CPU; the per-frame autoencoder replaces the Wan VAE (temporal
    factor 4 is not streamable here).
    """
    cfg = dataclasses.replace(DIT_PRESETS["wan-1.3b"], dim=96, num_heads=2, num_layers=2, ffn_dim=128,
                              camera_adapter_dim=16, vae_temporal_factor=1, latent_size=(6, 10))
    model, ae = random_student(cfg, "small")
    gen = StreamingGenerator(model, ae, StreamConfig(steps=2))
    assert (gen.height, gen.width, gen.cache.capacity_frames) == (48, 80, 1 + 9 + 3)
    gen.start(np.zeros((100, 100, 3), np.uint8))
    for _ in range(5):  # 15 frames: eviction after the window fills
        frames = gen.step(np.zeros((3, 48, 80, 3), np.uint8), np.tile(np.eye(4), (3, 1, 1)))
        assert frames.shape == (3, 48, 80, 3)
    assert gen.cache.seen_frames == 16 and gen.cache.frames <= 13


def test_stream_time_guidance_adds_branches():
    gen = _gen(guidance_hands=2.0, guidance_camera=1.5)
    rec = Recorder(gen.model)
    scene, control, c2w = _inputs(2)
    gen.start(scene)
    frames = gen.step(control, c2w)
    assert frames.shape == (2, 32, 32, 3)
    denoise = [c for c in rec.calls if not c["commit"]]
    assert len(denoise) == 3 * 3  # conditional + no-hands + no-camera per step
    keeps = {(float(c["cond"].keep_hands[0]), float(c["cond"].keep_camera[0])) for c in denoise
             if c["cond"].keep_hands is not None}
    assert keeps == {(0.0, 1.0), (1.0, 0.0)}
