"""The live app with ``--source generator``: a small random-weight student release streams generated frames.

The student (2-layer DiT + untrained conv autoencoder, 64x64 frames) is written to a temp folder with
``write_release`` (through ``write_student_release``), loaded by ``load_source("generator", weights=...)``
and driven over real loopback transports by the aiortc WebRTC client and a WebSocket client, with the
MediaPipe landmarks of the real cup video.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import cv2
import numpy as np
import pytest
import websockets
from conftest import micro_dit

from hand2world.checkpoints import random_student, write_student_release
from hand2world.models import DiTConfig
from hand2world.models.config import StreamConfig
from hand2world.server.app import create_app
from hand2world.server.clients import LocalServer, WebRTCClient, cup_hand_messages, wait_until
from hand2world.server.session import ServerConfig
from hand2world.server.sources import FrameSource, PreviewSource, load_source
from hand2world.stream import StreamingGenerator

STUDENT = micro_dit(latent_channels=8, dim=48, ffn_dim=64, cache_window=4, latent_size=(8, 8),
                    scene_every_frame=True)  # 64x64


def make_student_release(folder, config: DiTConfig = STUDENT, steps: int = 2):
    """A small random-weight student release (DiT + untrained conv autoencoder + stream.json + checksums)."""
    model, ae = random_student(config, "tiny")
    return write_student_release(folder, model, ae, StreamConfig(steps=steps))


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_student_release(tmp_path_factory.mktemp("weights") / "student")


@pytest.fixture(scope="module")
def cup_messages(cup_video):
    return cup_hand_messages(45)


def _config(student) -> ServerConfig:
    return ServerConfig(source="generator", weights=str(student), height=64, width=64, ice_hosts=("127.0.0.1",),
                        stats_interval=0.25)


def test_load_source_generator_auto_and_errors(student, tmp_path):
    gen = load_source("generator", 64, 64, weights=str(student))
    assert isinstance(gen, StreamingGenerator) and isinstance(gen, FrameSource)
    assert (gen.mode, gen.name, gen.height, gen.width) == ("generator", "generator", 64, 64)
    other = load_source("generator", 64, 64, weights=str(student))
    assert other.model is gen.model and other.cache is not gen.cache  # weights shared, one cache per session
    assert isinstance(load_source("auto", 64, 64, weights=str(student)), StreamingGenerator)
    assert isinstance(load_source("auto", 64, 64, weights=str(tmp_path / "none")), PreviewSource)
    with pytest.raises(ValueError, match="--height 64 --width 64"):
        load_source("generator", 240, 320, weights=str(student))
    with pytest.raises(FileNotFoundError, match="none"):
        load_source("generator", 64, 64, weights=str(tmp_path / "none"))


def test_serve_source_auto_picks_generator_or_says_why(student, tmp_path, monkeypatch, caplog):
    from hand2world.server.cli import _config as serve_config

    def args(**kw):
        base = dict(source="auto", weights=None, height=None, width=None, max_fps=30.0, device="cpu")
        return argparse.Namespace(**{**base, **kw})

    monkeypatch.setenv("HAND2WORLD_WEIGHTS", str(tmp_path))  # no weights/default here
    with caplog.at_level(logging.WARNING):
        cfg = serve_config(args())
    assert (cfg.source, cfg.height, cfg.width) == ("preview", 240, 320)
    assert "no generator weights" in caplog.text and "PREVIEW" in caplog.text
    (tmp_path / "default").symlink_to(student, target_is_directory=True)  # "shipped" weights appear
    cfg = serve_config(args())
    assert (cfg.source, cfg.height, cfg.width) == ("generator", 64, 64)
    cfg = serve_config(args(source="preview"))
    assert (cfg.source, cfg.height, cfg.width) == ("preview", 240, 320)


def test_webrtc_client_gets_50_generated_frames(student, cup_messages):
    async def run():
        async with LocalServer(create_app(_config(student))) as url:
            client = await WebRTCClient().connect(url, scene="coffee")
            stop = asyncio.Event()

            async def sender() -> None:
                i = 0
                while not stop.is_set():
                    client.send({**cup_messages[i % len(cup_messages)], "t": i * 1000.0 / 30})
                    i += 1
                    await asyncio.sleep(1 / 30)
            task = asyncio.create_task(sender())
            got = await client.wait_frames(50, 60)
            await wait_until(lambda: client.stats.get("frames_out", 0) >= 50, 10)
            stop.set()
            await task
            stats, frame = client.stats, client.last_frame
            await client.close()
            return got, stats, frame, client.events
    got, stats, frame, events = asyncio.run(run())
    assert got >= 50
    assert stats["mode"] == "generator" and stats["source"] == "generator" and stats["errors"] == 0
    assert stats["frames_out"] >= 50 and stats["hands_seen"] > 0
    assert any(e["type"] == "started" and e["mode"] == "generator" for e in events)
    assert frame.shape == (64, 64, 3)


def test_websocket_client_gets_50_generated_frames(student, cup_messages):
    async def run():
        async with LocalServer(create_app(_config(student))) as url:
            async with websockets.connect(url.replace("http://", "ws://") + "/ws", max_size=2**22) as ws:
                frames, events, last = 0, [], None

                async def reader() -> None:
                    nonlocal frames, last
                    async for m in ws:
                        if isinstance(m, bytes):
                            frames, last = frames + 1, m
                        else:
                            events.append(json.loads(m))
                await ws.send(json.dumps({"type": "start", "scene": "astronaut"}))
                rt = asyncio.create_task(reader())
                i = 0
                while frames < 50 and i < 1500:
                    await ws.send(json.dumps({**cup_messages[i % len(cup_messages)], "t": i * 1000.0 / 30}))
                    i += 1
                    await asyncio.sleep(1 / 30)
                rt.cancel()
                return frames, events, last
    frames, events, last = asyncio.run(run())
    assert frames >= 50
    assert not [e for e in events if e["type"] == "error"]
    assert next(e for e in events if e["type"] == "started")["mode"] == "generator"
    img = cv2.imdecode(np.frombuffer(last, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (64, 64, 3)
