"""Session churn: 63 rounds of 8 concurrent sessions (504) opened and closed against one in-process server.

Most rounds use WebSocket sessions (cheap); every 10th round uses real aiortc WebRTC peers. Every
session must receive at least one frame before it closes. Afterwards nothing may be left behind:
no live session (registry and ``/healthz``), no asyncio task beyond the baseline, no thread beyond
the baseline, and process RSS within 50 MB of its value after a warm-up round (issue 23's floor).

Baselines are taken after a warm-up round of each transport, because pools that are created once
and then reused are not leaks: the event loop's default executor (``asyncio.to_thread``, aiortc's
encoder) grows to at most ``min(32, cpus + 4)`` workers, torch / OpenCV create their worker pools
on first use. ``THREAD_SLACK`` allows the default executor to grow by a few more idle workers after
the warm-up (it only starts a new worker when none is idle at submit time, so its size depends
on timing); a per-session thread leak would exceed it by far (400 sessions).
All traffic stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time

import httpx
import pytest
import websockets

from hand2world.server.app import create_app
from hand2world.server.clients import LocalServer, WebRTCClient, wait_until
from hand2world.server.session import ServerConfig

pytestmark = pytest.mark.slow

ROUNDS, PER_ROUND, WEBRTC_EVERY = 63, 8, 10
RSS_SLACK_MB = 50
THREAD_SLACK = min(32, (os.cpu_count() or 1) + 4)  # the default executor's cap: idle workers it may add
CONFIG = ServerConfig(ice_hosts=("127.0.0.1",), max_sessions=PER_ROUND, stats_interval=0.25, height=120,
                      width=160, control_preview_hz=0.0)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def _hands(i: int) -> str:
    return json.dumps({"type": "hands", "t": float(i), "hands": []})


async def _ws_session(url: str, i: int) -> int:
    """One WebSocket session: start, one hands message, read until a JPEG frame, close. Returns its size."""
    async with websockets.connect(url.replace("http://", "ws://") + "/ws", max_size=2**22, open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "start", "scene": "coffee"}))
        await ws.send(_hands(i))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = await asyncio.wait_for(ws.recv(), 15)
            if isinstance(m, bytes):
                return len(m)
            if json.loads(m)["type"] == "error":
                raise AssertionError(m)
    raise AssertionError("no frame within 15 s")


async def _webrtc_session(url: str, i: int) -> int:
    """One aiortc WebRTC session: offer/answer, data channel open, one hands message, one video frame, close."""
    client = WebRTCClient()
    try:
        await client.connect(url, scene="coffee", timeout=15)
        client.send(_hands(i))
        n = await client.wait_frames(1, 15)
        assert n >= 1, f"WebRTC session {client.session} got no frame"
        return n
    finally:
        await client.close()


async def _round(url: str, registry, r: int) -> str:
    kind = "webrtc" if r % WEBRTC_EVERY == 0 else "ws"
    fn = _webrtc_session if kind == "webrtc" else _ws_session
    results = await asyncio.gather(*(fn(url, r * PER_ROUND + k) for k in range(PER_ROUND)))
    assert all(x > 0 for x in results)
    # the server releases every session once its client is gone (WebRTC: on the peer's close)
    assert await wait_until(lambda: not registry.sessions and not registry.peers, 15), \
        f"round {r}: {len(registry.sessions)} sessions left"
    return kind


def _settle_counts() -> tuple[int, int]:
    return len(asyncio.all_tasks()), threading.active_count()


def test_churn_500_sessions_leaves_nothing_behind():
    logging.getLogger("aioice").setLevel(logging.WARNING)

    async def run() -> dict:
        app = create_app(CONFIG)
        registry = app.state.registry
        out: dict = {}
        async with LocalServer(app) as url:
            # warm-up: one round of each transport, so one-time pools and caches exist before the baseline
            await _round(url, registry, 0)
            await _round(url, registry, 1)
            await asyncio.sleep(0.5)
            gc.collect()
            out["tasks0"], out["threads0"] = _settle_counts()
            out["rss0"] = _rss_mb()
            kinds = []
            t0 = time.perf_counter()
            for r in range(ROUNDS):
                kinds.append(await _round(url, registry, r))
            out["churn_s"] = time.perf_counter() - t0
            out["kinds"] = kinds
            # let closing transports finish (bounded), then count
            await wait_until(lambda: _settle_counts()[0] <= out["tasks0"], 10)
            gc.collect()
            out["tasks1"], out["threads1"] = _settle_counts()
            out["rss1"] = _rss_mb()
            out["task_names"] = sorted(t.get_name() for t in asyncio.all_tasks())
            async with httpx.AsyncClient(timeout=10) as http:
                out["health"] = (await http.get(f"{url}/healthz")).json()
                out["metrics"] = (await http.get(f"{url}/metrics")).text
            out["sessions"], out["peers"] = len(registry.sessions), len(registry.peers)
        return out

    out = asyncio.run(run())
    print({k: v for k, v in out.items() if k not in ("metrics", "kinds")})
    assert ROUNDS * PER_ROUND >= 500
    assert out["kinds"].count("webrtc") == len(range(0, ROUNDS, WEBRTC_EVERY)) and out["kinds"].count("ws") > 0
    assert out["sessions"] == 0 and out["peers"] == 0 and out["health"]["sessions"] == 0
    metrics = dict(line.split(" ", 1) for line in out["metrics"].splitlines() if not line.startswith("#"))
    assert int(metrics["hand2world_sessions_total"]) == (ROUNDS + 2) * PER_ROUND
    assert int(metrics["hand2world_frames_out_total"]) >= (ROUNDS + 2) * PER_ROUND
    assert out["tasks1"] <= out["tasks0"], out["task_names"]
    assert out["threads1"] <= out["threads0"] + THREAD_SLACK, (out["threads0"], out["threads1"])
    assert out["rss1"] - out["rss0"] < RSS_SLACK_MB, (out["rss0"], out["rss1"])
