"""Distillation on tiny CPU configs: ODE pairs + regression, DMD on self-forcing rollouts, exact resume,
the release (stream.json) and torchrun."""

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
from safetensors.torch import load_file

from hand2world.distill import DistillRunConfig, run_distill
from hand2world.distill.dmd import DmdTask
from hand2world.distill.ode import OdeTask
from hand2world.models import DiT, StreamConfig, load_config
from hand2world.stream.rollout import rollout, student_timesteps
from hand2world.train import TeacherRunConfig, load_run_config, train_teacher
from hand2world.train.config import from_dict

DATA = {"procedural_clips": 4, "frames": 5, "size": 32}
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A micro teacher release (a few steps on procedural clips; quality is irrelevant here)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = from_dict(TeacherRunConfig, {
        "model": {"preset": "tiny", "overrides": MICRO_DIT}, "autoencoder": "preset:tiny", "data": DATA,
        "optim": {"steps": 4, "batch_size": 2, "lr": 2e-3, "warmup": 1, "ckpt_every": 1000}, "out_dir": str(out)})
    return train_teacher(cfg)["final"]


def _cfg(teacher: Path, out: Path, stage: str = "ode", **sets) -> DistillRunConfig:
    raw = {"stage": stage, "teacher": str(teacher), "out_dir": str(out / "student_{stage}"),
           "student": {"steps": 2, "block": 1, "sink": 1},
           "ode": {"pairs": 6, "teacher_steps": 4, "gen_batch": 3, "shard_size": 4, "guidance_hands": 1.5,
                   "hand_loss_weight": 4.0,
                   "optim": {"steps": 80, "batch_size": 4, "lr": 2e-3, "warmup": 1, "ema_decay": 0.9,
                             "ckpt_every": 1000, "log_every": 1000}},
           "dmd": {"critic_lr": 1e-3, "critic_steps": 2, "guidance_hands": 1.5, "hand_loss_weight": 4.0,
                   "optim": {"steps": 4, "batch_size": 2, "lr": 1e-3, "warmup": 1, "ema_decay": 0.9,
                             "ckpt_every": 1000, "log_every": 1000}}}
    from hand2world.train.config import override

    return from_dict(DistillRunConfig, override(raw, [f"{k}={v}" for k, v in sets.items()]))


@torch.no_grad()
def _fixed_regression_loss(task: OdeTask, model: DiT, n: int = 4) -> float:
    return sum(float(task.loss(model.eval(), 10**6 + k, 0, 0, 1)) for k in range(n)) / n


def test_ode_pairs_and_regression(teacher, tmp_path):
    cfg = _cfg(teacher, tmp_path)
    task = OdeTask(cfg)
    task.prepare(tmp_path / "student_ode")
    pairs = tmp_path / "student_ode" / "pairs"
    assert sorted(p.name for p in pairs.glob("shard_*")) == ["shard_00000.safetensors", "shard_00001.safetensors"]
    c, (h, w) = task.config.latent_channels, task.config.latent_size
    assert task.pairs["xt"].shape == (6, 2, c, 4, h, w) and task.pairs["x0"].shape == (6, c, 4, h, w)
    assert task.pairs["xt"].dtype == torch.float16
    # the first kept state is the noise (t = 1), the last is on the way to x0: closer to it than the noise
    assert task.config.frames_per_block == 1 and task.config.cache_sink == 1
    x, t, cond, target, hands = task.batch(0, 0, 0, 1)
    assert x.shape == (4, c, 5, h, w) and t.shape == (4, 5) and target.shape == (4, c, 4, h, w)
    assert hands.shape == (4, 4, h, w) and float(hands.max()) > 0
    assert torch.all(t[:, 0] == 0) and set(t[:, 1:].flatten().tolist()) <= set(student_timesteps(2))
    before = _fixed_regression_loss(task, task.model)

    out = run_distill(cfg)  # reuses the stored pairs (same settings)
    assert out["final"] is not None and len(out["losses"]) == 80
    student = DiT(load_config(out["final"] / "config.json"))
    student.load_state_dict(load_file(str(out["final"] / "model.safetensors")))
    after = _fixed_regression_loss(task, student)
    print(f"ODE regression loss {before:.4f} -> {after:.4f}")
    assert after < 0.7 * before, (before, after)
    assert load_config(out["final"] / "stream.json") == StreamConfig(steps=2, stochastic=False)

    with pytest.raises(ValueError, match="other settings"):  # pairs made with other settings are refused
        OdeTask(_cfg(teacher, tmp_path, **{"ode.teacher_steps": 8})).prepare(tmp_path / "student_ode")


@pytest.mark.parametrize("block", [1, 2])
def test_dmd_gradient_flows_through_the_rollout_and_the_critic_learns(teacher, tmp_path, monkeypatch, block):
    cfg = _cfg(teacher, tmp_path, stage="dmd", init=str(teacher), **{"student.block": block})
    task = DmdTask(cfg)
    assert task.config.frames_per_block == block
    task.setup()
    calls = []
    import hand2world.distill.dmd as dmd

    def spy(*args, **kwargs):
        out = rollout(*args, **kwargs)
        calls.append((kwargs["exit_steps"], out.requires_grad))
        return out

    monkeypatch.setattr(dmd, "rollout", spy)
    critic_before = {k: v.clone() for k, v in task.critic.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in task.teacher.model.state_dict().items()}
    task.model.train()
    loss = task.loss(task.model, 0, 0, 0, 1)
    loss.backward()
    assert len(calls) == 1 and calls[0][1] and len(calls[0][0]) == 4 // block  # one exit step per block
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert task.metrics()["critic_loss"] > 0
    changed = [k for k, v in task.critic.state_dict().items() if not torch.equal(v, critic_before[k])]
    assert len(changed) > 10
    assert all(torch.equal(v, teacher_before[k]) for k, v in task.teacher.model.state_dict().items())


def test_dmd_resume_is_exact_and_the_release_streams(teacher, tmp_path):
    straight = run_distill(_cfg(teacher, tmp_path / "a", stage="dmd", init=str(teacher)))["losses"]
    split = _cfg(teacher, tmp_path / "b", stage="dmd", init=str(teacher))
    first = run_distill(split, max_steps=2)
    assert first["final"] is None
    ckpt = tmp_path / "b" / "student_dmd" / "checkpoints" / "step_0000002"
    assert (ckpt / "task_state.safetensors").is_file() and (ckpt / "stream.json").is_file()
    second = run_distill(split)
    assert second["start_step"] == 2
    assert [loss for _, loss in straight[2:]] == [loss for _, loss in second["losses"]]
    rows_a = [json.loads(r) for r in (tmp_path / "a" / "student_dmd" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(r) for r in (tmp_path / "b" / "student_dmd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["critic_loss"] for r in rows_a] == [r["critic_loss"] for r in rows_b]
    assert (tmp_path / "b" / "student_dmd" / "loss.png").is_file()

    final = second["final"]
    assert {"config.json", "model.safetensors", "autoencoder.json", "autoencoder.safetensors", "run.json",
            "stream.json"} <= {p.name for p in final.iterdir()}
    stream = load_config(final / "stream.json")
    assert stream == StreamConfig(steps=2, stochastic=True)
    _check_release_streams(final, stream)


def _check_release_streams(final: Path, stream: StreamConfig) -> None:
    """The release loads in the StreamingGenerator (with its stream.json) and streams frames."""
    import numpy as np

    from hand2world.stream import StreamingGenerator

    gen = StreamingGenerator.from_pretrained(str(final))
    assert gen.stream == stream and gen.config.frames_per_block == 1
    gen.start(np.zeros((gen.height, gen.width, 3), np.uint8))
    for _ in range(3):
        frames = gen.step(np.zeros((1, gen.height, gen.width, 3), np.uint8), np.eye(4, dtype=np.float32)[None])
        assert frames.shape == (1, gen.height, gen.width, 3) and frames.dtype == np.uint8


def test_distill_tiny_yaml_is_valid():
    path = REPO / "configs" / "distill_tiny.yaml"
    cfg = load_run_config(path, DistillRunConfig)
    assert cfg.stage == "ode" and cfg.student.block == 1 and cfg.student.steps <= 4 and cfg.student.sink == 1
    assert load_run_config(path, DistillRunConfig, ["stage=dmd"]).optim == cfg.dmd.optim
    with pytest.raises(ValueError, match="multiple"):
        load_run_config(path, DistillRunConfig, ["ode.teacher_steps=7"])
    with pytest.raises(ValueError, match="stage"):
        load_run_config(path, DistillRunConfig, ["stage=sft"])


def test_torchrun_two_processes_dmd(teacher, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found beside the interpreter")
    cfg = _cfg(teacher, tmp_path, stage="dmd", init=str(teacher))
    from hand2world.train.config import to_dict

    data = to_dict(cfg)
    data["dmd"]["optim"].update(steps=2, batch_size=1, threads=1)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(data))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port,
                           "-m", "hand2world.cli", "distill", "--config", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["stage"] == "dmd" and summary["steps"] == 2 and summary["final"]
    assert (tmp_path / "student_dmd" / "final" / "stream.json").is_file()


def test_recipe_runs_every_stage_then_skips_them(teacher, tmp_path):
    from hand2world.distill.recipe import Recipe, run_recipe

    conf = tmp_path / "configs"
    conf.mkdir()
    optim = {"steps": 2, "batch_size": 2, "warmup": 1, "ckpt_every": 1000}
    (conf / "autoencoder_micro.yaml").write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "overrides": {"latent_channels": 4, "channels": [8, 16, 16]}},
        "data": {"size": 32, "frames": 5}, "optim": optim, "stats_frames": 4, "out_dir": str(tmp_path / "ae")}))
    (conf / "teacher_micro.yaml").write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "overrides": MICRO_DIT}, "data": {"size": 32, "frames": 5}, "optim": optim,
        "out_dir": str(tmp_path / "teacher")}))
    distill = json.loads(json.dumps(_cfg(teacher, tmp_path).__dict__, default=lambda o: o.__dict__))
    distill.update(teacher="set-by-the-recipe", data=None)
    distill["ode"].update(pairs=2, gen_batch=2, optim=optim)
    distill["dmd"]["optim"] = optim
    (conf / "distill_micro.yaml").write_text(yaml.safe_dump(distill))
    recipe = Recipe(clips=2, frames=5, size=32, data=str(tmp_path / "world"))
    report = run_recipe("micro", workers=1, config_dir=conf, recipe=recipe)
    assert list(report) == ["world", "autoencoder", "teacher", "ode", "dmd"]
    assert all(isinstance(v, dict) for v in report.values()), report
    final = tmp_path / "student_dmd" / "final"
    assert (final / "stream.json").is_file()
    assert json.loads((final / "run.json").read_text())["teacher"] == str(tmp_path / "teacher")
    again = run_recipe("micro", workers=1, config_dir=conf, recipe=recipe)
    assert set(again.values()) == {"skipped"}


@pytest.mark.parametrize("stage", ["ode", "dmd"])
def test_bench_distill(teacher, stage, capsys):
    from hand2world.cli import main

    assert main(["bench", "distill", "--stage", stage, "--teacher", str(teacher), "--iters", "1",
                 "--config", str(REPO / "configs" / "distill_tiny.yaml")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps_per_s"] > 0 and ("pair_s" in result) == (stage == "ode")
