"""Training on tiny CPU configs: overfitting, exact resume, run configs, autoencoder, sampling, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MICRO_DIT

from hand2world.diffusion import euler_sample, flow_loss
from hand2world.models import DiT, load_config
from hand2world.train import (
    AutoencoderRunConfig,
    TeacherRunConfig,
    load_run_config,
    train_autoencoder,
    train_teacher,
)
from hand2world.train.config import from_dict
from hand2world.train.data import ProceduralClips
from hand2world.train.teacher import TeacherTask

MICRO_AE = {"latent_channels": 4, "channels": [8, 16], "blocks_per_level": 1}


def _teacher_cfg(out_dir: Path, **optim) -> dict:
    return {"model": {"preset": "tiny", "overrides": MICRO_DIT}, "autoencoder": "preset:tiny",
            "data": {"procedural_clips": 8, "frames": 4, "size": 32},
            "optim": {"steps": 200, "batch_size": 4, "lr": 2e-3, "warmup": 10, "ema_decay": 0.99, "ckpt_every": 1000,
                      "log_every": 1000, **optim},
            "p_drop_hands": 0.0, "p_drop_camera": 0.0, "out_dir": str(out_dir)}


@torch.no_grad()
def _fixed_loss(task: TeacherTask, model: DiT, n: int = 4) -> float:
    """Flow loss on fixed batches, noise and timesteps (independent of training randomness)."""
    total = 0.0
    for k in range(n):
        x0, cond, _ = task.batch(10**6 + k, 0, 0, 1)
        g = torch.Generator().manual_seed(k)
        t = torch.rand(x0.shape[0], generator=g) * 0.9 + 0.05
        total += float(flow_loss(model.eval(), x0, cond, t, torch.randn(x0.shape, generator=g)))
    return total / n


def test_overfit_8_clips_halves_the_loss(tmp_path):
    cfg = from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "run"))
    clips = ProceduralClips(n=8, frames=4, size=32)
    ref = TeacherTask(cfg, dataset=clips)
    before = _fixed_loss(ref, ref.model)
    out = train_teacher(cfg, dataset=clips)
    assert out["final"] is not None and len(out["losses"]) == 200
    model = DiT(load_config(out["final"] / "config.json"))
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out["final"] / "model.safetensors")))
    after = _fixed_loss(ref, model)
    print(f"fixed-batch flow loss: {before:.4f} -> {after:.4f}")
    assert after <= 0.5 * before, (before, after)
    assert (tmp_path / "run" / "loss.png").is_file()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 200 and json.loads(rows[-1])["step"] == 200


def test_resume_reproduces_next_losses_exactly(tmp_path):
    clips = ProceduralClips(n=8, frames=4, size=32)
    straight = from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "a", steps=6, grad_accum=2))
    full = train_teacher(straight, dataset=clips)["losses"]
    split = from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "b", steps=6, grad_accum=2))
    first = train_teacher(split, dataset=clips, max_steps=3)
    assert first["final"] is None and (tmp_path / "b" / "checkpoints" / "latest").is_file()
    with (tmp_path / "b" / "metrics.jsonl").open("a") as fh:  # a killed run's steps after the checkpoint
        fh.write(json.dumps({"step": 4, "loss": 0.0, "lr": 0.0, "time": 0.0}) + "\n")
    second = train_teacher(split, dataset=clips)
    assert second["start_step"] == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in full[3:]] == [loss for _, loss in second["losses"]]
    ckpt = tmp_path / "b" / "checkpoints" / "step_0000006"
    assert {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "config.json", "train_state.json",
            "autoencoder.safetensors", "autoencoder.json"} <= {p.name for p in ckpt.iterdir()}


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU bf16 RMSNorm: unfused path
def test_bf16_autocast_and_gradient_checkpointing_step(tmp_path):
    clips = ProceduralClips(n=2, frames=4, size=32)
    cfg = from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "bf16", steps=2, precision="bf16",
                                                    gradient_checkpointing=True))
    out = train_teacher(cfg, dataset=clips)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in out["losses"])


def test_run_config_yaml_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"steps": 5, "lr": 1}, "data": {"size": 64}}))
    cfg = load_run_config(path, TeacherRunConfig, ["optim.batch_size=2", "causal=true", "optim.warmup=3"])
    assert cfg.optim.steps == 5 and cfg.optim.lr == 1.0 and cfg.optim.batch_size == 2 and cfg.causal
    assert load_run_config(None, TeacherRunConfig, ["optim.lr=5e-4"]).optim.lr == 5e-4
    with pytest.raises(ValueError, match="optim.lr"):
        load_run_config(None, TeacherRunConfig, ["optim.lr=fast"])
    path.write_text(yaml.safe_dump({"optim": {"stepz": 5}}))
    with pytest.raises(ValueError, match="stepz"):
        load_run_config(path, TeacherRunConfig)
    with pytest.raises(ValueError, match="optim.steps"):
        load_run_config(None, TeacherRunConfig, ["optim.steps=many"])
    for name in ("teacher_tiny.yaml", "autoencoder_tiny.yaml"):
        cls = TeacherRunConfig if name.startswith("teacher") else AutoencoderRunConfig
        load_run_config(Path(__file__).parent.parent / "configs" / name, cls)


def test_autoencoder_training_then_teacher_on_its_latents(tmp_path):
    clips = ProceduralClips(n=4, frames=4, size=32)
    ae_cfg = from_dict(AutoencoderRunConfig, {
        "model": {"preset": "tiny", "overrides": MICRO_AE}, "data": {"size": 32},
        "optim": {"steps": 30, "batch_size": 8, "lr": 2e-3, "warmup": 1, "ckpt_every": 1000}, "stats_frames": 16,
        "out_dir": str(tmp_path / "ae")})
    out = train_autoencoder(ae_cfg, dataset=clips)
    assert out["losses"][-1][1] < out["losses"][0][1]
    released = load_config(out["final"] / "config.json")
    assert len(released.latent_std) == 4 and out["psnr_db"] > 10
    cfg = from_dict(TeacherRunConfig, {**_teacher_cfg(tmp_path / "t", steps=3), "autoencoder": str(out["final"])})
    res = train_teacher(cfg, dataset=clips)
    assert load_config(res["final"] / "autoencoder.json") == released


def test_euler_sampling_with_guidance():
    cfg = from_dict(TeacherRunConfig, _teacher_cfg(Path("unused")))
    task = TeacherTask(cfg, dataset=ProceduralClips(n=2, frames=4, size=32))
    x0, cond, _ = task.batch(0, 0, 0, 1)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    a = euler_sample(task.model.eval(), noise, cond, steps=3)
    b = euler_sample(task.model, noise, cond, steps=3, guidance_hands=2.0, guidance_camera=1.5)
    assert a.shape == x0.shape and torch.isfinite(b).all()
    assert torch.equal(a, euler_sample(task.model, noise, cond, steps=3))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_two_processes_cpu(tmp_path, parallel):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found beside the interpreter")
    cfg = _teacher_cfg(tmp_path / "run", steps=5, batch_size=2, parallel=parallel, threads=1)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port,
                           "-m", "hand2world.cli", "train", "teacher", "--config", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["steps"] == 5 and summary["final"]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_latent_disk_cache_is_exact_and_keyed_by_autoencoder(tmp_path, monkeypatch):
    """Whole-clip latents are encoded once, read back bit-exactly, and never reused across autoencoders."""
    from hand2world.checkpoints import load_autoencoder
    from hand2world.models import DIT_PRESETS
    from hand2world.train.data import ClipSource
    from hand2world.train.windows import LatentWindows

    monkeypatch.setenv("HAND2WORLD_RUNS", str(tmp_path / "runs"))

    class OnDisk(ProceduralClips):  # a dataset with a folder (what ClipDataset has), without writing one
        root = tmp_path / "data"

    source = ClipSource(OnDisk(n=2, frames=4, size=32), 32, 4)
    ae = load_autoencoder("preset:tiny")
    first = LatentWindows(source, ae, DIT_PRESETS["tiny"], torch.device("cpu"))
    lat = first.clip_latents(1)
    assert first.cache_dir is not None and (first.cache_dir / "0000001.safetensors").is_file()
    again = LatentWindows(source, ae, DIT_PRESETS["tiny"], torch.device("cpu")).clip_latents(1)
    assert torch.equal(lat[0], again[0]) and torch.equal(lat[1], again[1])
    other = load_autoencoder("preset:tiny")
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert LatentWindows(source, other, DIT_PRESETS["tiny"], torch.device("cpu")).cache_dir != first.cache_dir
    monkeypatch.setenv("HAND2WORLD_LATENT_CACHE", "0")
    assert LatentWindows(source, ae, DIT_PRESETS["tiny"], torch.device("cpu")).cache_dir is None


def test_mask_conditioning_ablation_trains_on_masks_and_streams_silhouettes(tmp_path):
    """``control_input="mask"``: training windows carry 2-D hand masks instead of the mesh render, and
    the streaming generator feeds such a model the render's full silhouette."""
    import numpy as np

    from hand2world.checkpoints import write_student_release
    from hand2world.models import StreamConfig
    from hand2world.render import control_silhouette, mask_control
    from hand2world.stream import StreamingGenerator

    render_task = TeacherTask(from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "r", steps=2)))
    cfg = _teacher_cfg(tmp_path / "m", steps=2)
    cfg["model"]["overrides"] = {**MICRO_DIT, "control_input": "mask"}
    mask_task = TeacherTask(from_dict(TeacherRunConfig, cfg))
    _, c_render = render_task.windows.clip_latents(0)
    _, c_mask = mask_task.windows.clip_latents(0)
    clip = mask_task.source.clip(0)
    sil = control_silhouette(clip["control"])
    assert set(np.unique(sil)) == {0, 255} and np.array_equal(sil[..., 0] > 0, clip["control"].max(-1) > 8)
    x = torch.from_numpy(sil).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)[None]
    assert torch.allclose(c_mask, mask_task.ae.encode(x)[0], atol=1e-5)  # the masks were encoded, not the render
    assert not torch.allclose(c_mask, c_render, atol=1e-3)
    assert np.array_equal(mask_control(np.array([[True, False]])), [[[255] * 3, [0] * 3]])
    res = train_teacher(from_dict(TeacherRunConfig, cfg))
    assert load_config(res["final"] / "config.json").control_input == "mask"
    # streaming: a render and its silhouette give the same frames to a mask-conditioned student
    model = DiT(load_config(res["final"] / "config.json"))
    folder = write_student_release(tmp_path / "student", model, mask_task.ae, StreamConfig(steps=1))
    frames = []
    for ctl in (clip["control"][:2], sil[:2]):
        gen = StreamingGenerator.from_pretrained(folder)
        gen.start(clip["video"][0])
        frames.append(gen.step(ctl, np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))))
    assert np.array_equal(frames[0], frames[1])


def test_ema_decay_warms_up():
    from hand2world.train.trainer import EMA

    ema = EMA(torch.nn.Linear(2, 2), 0.999)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(90) == 0.91 and ema.decay_at(10**6) == 0.999
    assert ema.decay_at(None) == 0.999


def test_hand_weighted_loss_and_coverage(tmp_path):
    """Hand coverage marks the latent cells under the control render; the weighted loss is the weighted mean
    and leans on the hand cells; a weighted run trains and resumes like any other."""
    from hand2world.train.windows import hand_coverage

    control = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    control[0, 8:16, 8:12] = 200  # half of latent cell (1, 1) at factor 8
    cover = hand_coverage(control, 8)
    assert cover.shape == (2, 4, 4)
    assert cover[0, 1, 1] == pytest.approx(0.5) and float(cover.sum()) == pytest.approx(0.5)

    x0 = torch.zeros(1, 2, 1, 2, 2)
    noise = torch.zeros_like(x0)
    wrong = torch.zeros_like(x0)
    wrong[..., 0, 0] = 1.0  # the model errs on one cell only

    def model(x, t, cond, causal=False):
        return wrong

    t = torch.tensor([0.5])
    weight = torch.ones(1, 1, 2, 2)
    assert float(flow_loss(model, x0, None, t, noise, weight=weight)) == pytest.approx(0.25)
    weight[..., 0, 0] = 7.0  # error on a hand cell costs more
    assert float(flow_loss(model, x0, None, t, noise, weight=weight)) == pytest.approx(7 / 10)
    weight[..., 0, 0] = 1.0
    weight[..., 1, 1] = 7.0  # hand elsewhere: the same error costs less
    assert float(flow_loss(model, x0, None, t, noise, weight=weight)) == pytest.approx(1 / 10)

    clips = ProceduralClips(n=4, frames=4, size=32)
    cfg = from_dict(TeacherRunConfig, {**_teacher_cfg(tmp_path / "w", steps=3), "hand_loss_weight": 4.0})
    task = TeacherTask(cfg, dataset=clips)
    b = task.sample(0, 0, 0, 1)
    assert b.hands.shape == (b.x0.shape[0], b.x0.shape[2], *b.x0.shape[3:])
    assert 0 < float(b.hands.max()) <= 1 and float(b.hands.min()) == 0  # procedural clips draw a hand ellipse
    out = train_teacher(cfg, dataset=clips)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in out["losses"])


def test_teacher_init_from_weights(tmp_path):
    """``init`` starts a run from earlier weights of the same architecture and latent space, else refuses."""
    clips = ProceduralClips(n=4, frames=4, size=32)
    first = train_teacher(from_dict(TeacherRunConfig, _teacher_cfg(tmp_path / "a", steps=2)), dataset=clips)
    cfg = from_dict(TeacherRunConfig, {**_teacher_cfg(tmp_path / "b", steps=1), "init": str(first["final"])})
    task = TeacherTask(cfg, dataset=clips)
    from hand2world.checkpoints import load_video_model

    ref = load_video_model(first["final"])[0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in task.model.state_dict().items())
    other = _teacher_cfg(tmp_path / "c", steps=1)
    other["model"]["overrides"] = {**MICRO_DIT, "num_layers": 3}
    with pytest.raises(ValueError, match="another architecture"):
        TeacherTask(from_dict(TeacherRunConfig, {**other, "init": str(first["final"])}), dataset=clips)
    # the ablations fine-tune from the same weights: no Plücker adapter (its weights left out), mask conditioning
    ablation = _teacher_cfg(tmp_path / "d", steps=1)
    ablation["model"]["overrides"] = {**MICRO_DIT, "camera_adapter_dim": 0, "control_input": "mask"}
    abl = TeacherTask(from_dict(TeacherRunConfig, {**ablation, "init": str(first["final"])}), dataset=clips)
    assert abl.model.camera_adapter is None and abl.config.control_input == "mask"
    assert all(torch.equal(v, ref[k]) for k, v in abl.model.state_dict().items())
