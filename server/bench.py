"""`hand2world bench serve`: the live app under load and abuse, over loopback, bounded in count and time.

Phases (each ``--seconds`` long after a warm-up, a fresh server each): 1, 2 and 4 WebSocket
clients that send the real cup video's MediaPipe landmarks at ``--rate`` Hz and read every frame;
then ``--abuse-base`` such clients beside one *flooding* client (valid ``hands`` messages at up
to 1,000 a second, from a process of its own as a remote client would be) and one *non-reading*
client (sends at ``--rate`` Hz, never reads). The baseline for that phase has the same number of
sessions, well behaved: the flooder's polite twin (a normal client) and an idle client
(connected, sending only ``ping``), so the ratio shows what flooding and not reading cost beyond
being a session at all. Reported per phase: each normal session's frames per second as its
client received them, and the server-side latency (a ``hands`` message arriving -> the first
frame conditioned on it leaving the server) p50 / p95 pooled over the normal sessions; for the
abuse phase, the normal sessions' fps and p95 relative to the baseline, the flood's messages
sent / refused by the budget, and the steps the non-reading client's session computed.

The normal clients share the server's process and event loop (as ``bench latency``), so their
own cost is in the figures; on a 2-core machine the absolute fps is CPU-bound, compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _client(url: str, out: dict, read: bool = True):
    """A started ``/ws`` client; ``out["session"]`` is its id; frames it reads land in ``out["frame_times"]``."""
    import websockets

    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "scene": "coffee"}))
        out["session"] = json.loads(await ws.recv()).get("session")
        out["frame_times"] = []

        async def reader() -> None:
            async for m in ws:
                if isinstance(m, bytes):
                    out["frame_times"].append(time.perf_counter())

        task = asyncio.create_task(reader()) if read else None
        if not read:
            ws.transport.pause_reading()  # never reads again: the server's sends back up on it
        try:
            yield ws
        finally:
            if task is not None:
                task.cancel()


async def _normal(url: str, msgs: list[dict], rate: float, stop: asyncio.Event, out: dict,
                  read: bool = True) -> None:
    """``rate`` hands messages a second (``read=False``: the non-reading client)."""
    async with _client(url, out, read) as ws:
        i = 0
        while not stop.is_set():
            await ws.send(json.dumps({**msgs[i % len(msgs)], "t": i * 1000.0 / rate}))
            i += 1
            await asyncio.sleep(1.0 / rate)


FLOOD_SCRIPT = """
import asyncio, json, sys, time
import websockets

async def main(url, raw, seconds):
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "start", "scene": "coffee"}))
        print(json.loads(await ws.recv()).get("session"), flush=True)

        async def drain():
            async for _ in ws:
                pass

        task = asyncio.create_task(drain())
        sent, t0, closed = 0, time.perf_counter(), -1.0
        try:
            while time.perf_counter() - t0 < seconds:
                for _ in range(10):
                    await ws.send(raw)
                    sent += 1
                await asyncio.sleep(max(0.0, t0 + sent / 1000.0 - time.perf_counter()))
        except websockets.ConnectionClosed:
            closed = time.perf_counter() - t0
        t = time.perf_counter() - t0 if closed < 0 else closed
        print(sent, sent / t, closed, flush=True)
        task.cancel()

asyncio.run(main(sys.argv[1], sys.stdin.read(), float(sys.argv[2])))
"""


async def _flood(url: str, msg: dict, seconds: float, out: dict) -> None:
    """Valid hands messages at up to 1,000 a second from a process of its own (as a remote client would be)."""
    import sys

    # niced: on a small shared machine the flooder's own CPU would otherwise be counted as the server's cost
    cmd = ["nice", "-n", "19", sys.executable, "-c", FLOOD_SCRIPT, url, str(seconds)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({**msg, "t": 0.0}).encode())
    proc.stdin.close()
    out["session"] = (await proc.stdout.readline()).decode().strip()
    sent, rate, closed = (await proc.stdout.readline()).decode().split()
    out["sent"], out["rate"] = int(sent), float(rate)
    out["closed_by_server_after_s"] = float(closed) if float(closed) >= 0 else None
    await proc.wait()


async def _idle(url: str, stop: asyncio.Event, out: dict) -> None:
    """Connected, sending only a ping a second."""
    async with _client(url, out) as ws:
        while not stop.is_set():
            await ws.send('{"type": "ping"}')
            await asyncio.sleep(1.0)


async def _phase(config: Any, msgs: list[dict], normal: int, extra: str, seconds: float, warmup: float,
                 rate: float) -> dict:
    """``extra``: "" (only normal clients), "polite" (+ a normal and an idle client), "abuse" (+ flood, non-reader)."""
    from hand2world.server.app import create_app
    from hand2world.server.clients import LocalServer

    app = create_app(config)
    registry = app.state.registry
    async with LocalServer(app) as base:
        url = base.replace("http://", "ws://") + "/ws"
        stop = asyncio.Event()
        outs: list[dict] = [{} for _ in range(normal)]
        tasks = [asyncio.create_task(_normal(url, msgs, rate, stop, o)) for o in outs]
        flood: dict = {}
        lazy: dict = {}
        abuse = extra == "abuse"
        if abuse:
            tasks += [asyncio.create_task(_flood(url, msgs[0], warmup + seconds, flood)),
                      asyncio.create_task(_normal(url, msgs, rate, stop, lazy, read=False))]
        elif extra == "polite":
            tasks += [asyncio.create_task(_normal(url, msgs, rate, stop, {})),
                      asyncio.create_task(_idle(url, stop, {}))]
        await asyncio.sleep(warmup)
        t0 = time.perf_counter()
        marks = {sid: len(s.latencies()) for sid, s in registry.sessions.items()}
        steps0 = {sid: getattr(s, "_index", 0) for sid, s in registry.sessions.items()}
        await asyncio.sleep(seconds)
        t1 = time.perf_counter()
        sessions = dict(registry.sessions)
        lat: list[float] = []
        fps = []
        for o in outs:
            s = sessions.get(o.get("session"))
            if s is not None:
                lat += s.latencies()[marks.get(s.id, 0):]
            fps.append(round(sum(1 for t in o.get("frame_times", []) if t0 <= t < t1) / (t1 - t0), 2))
        result: dict[str, Any] = {"clients": normal, "fps": fps, "fps_mean": round(float(np.mean(fps)), 2),
                                  "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
                                  "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None}
        if abuse:
            fs, ls = sessions.get(flood.get("session")), sessions.get(lazy.get("session"))
            result["flood"] = {"live_during_measurement": fs is not None,
                               "messages_read_by_server": fs.stats()["messages_in"] if fs else None}
            result["non_reader_steps"] = (ls._index - steps0.get(ls.id, 0)) if ls else None
        stop.set()
        await asyncio.wait(tasks, timeout=10)
        if abuse:
            result["flood"].update({k: round(v, 1) if isinstance(v, float) else v for k, v in flood.items()
                                    if k in ("sent", "rate", "closed_by_server_after_s")})
    return result


async def bench_serve(args: argparse.Namespace, make_config: Any) -> dict:
    """Run the phases; ``make_config(args, **overrides)`` builds the ``ServerConfig`` (the CLI's)."""
    from hand2world.server.clients import cup_hand_messages

    logging.getLogger("aioice").setLevel(logging.WARNING)
    msgs = await asyncio.to_thread(cup_hand_messages, 60)
    cfg = make_config(args, ice_hosts=("127.0.0.1",), ice_servers=(), max_sessions=8, idle_timeout_s=60.0)
    load0 = round(os.getloadavg()[0], 2)
    phases = []
    for n in (1, 2, 4):
        phases.append(await _phase(cfg, msgs, n, "", args.seconds, args.warmup, args.rate))
        log.info("bench serve: %s", phases[-1])
    base = await _phase(cfg, msgs, args.abuse_base, "polite", args.seconds, args.warmup, args.rate)
    abused = await _phase(cfg, msgs, args.abuse_base, "abuse", args.seconds, args.warmup, args.rate)
    abused["fps_vs_baseline"] = round(abused["fps_mean"] / base["fps_mean"], 3) if base["fps_mean"] else None
    if base["latency_p95_ms"] and abused["latency_p95_ms"]:
        abused["p95_vs_baseline"] = round(abused["latency_p95_ms"] / base["latency_p95_ms"], 3)
    return {"load_average_1m": [load0, round(os.getloadavg()[0], 2)],
            "what": f"WebSocket clients at {args.rate:g} Hz, {cfg.source} source, {cfg.width}x{cfg.height}, "
                    f"{args.seconds:g} s per phase after {args.warmup:g} s warm-up; latency = hands message in -> "
                    "first frame conditioned on it out (server side)",
            "scaling": phases, "abuse_baseline": base, "abuse": abused,
            "budget": {"message_rate": cfg.message_rate, "message_burst": cfg.message_burst}}


def configure(p: argparse.ArgumentParser) -> None:
    """This benchmark's own options (the CLI adds the frame-source ones)."""
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds per phase before measuring")
    p.add_argument("--rate", type=float, default=30.0, help="hands messages per second per normal client")
    p.add_argument("--abuse-base", type=int, default=2, help="normal clients beside the flooding and non-reading ones")
