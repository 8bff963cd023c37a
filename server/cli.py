"""`hand2world serve` and `hand2world bench latency`.

``serve`` runs the live app with uvicorn. ``--source preview`` (default, the only source until the
video model's ``StreamingGenerator`` exists) streams the *conditioning preview* — the real control
render over the scene photo — not generated video; ``--source generator --weights ...`` will run
the model. ``--ice-host`` limits WebRTC host candidates (e.g. 127.0.0.1 inside a network
namespace with only loopback); by default aioice offers every non-loopback interface address.
``--ice-server URL`` (repeatable; default: ``$HAND2WORLD_ICE_SERVERS``, space- or comma-separated)
gives the server's peer connections STUN/TURN servers, e.g. ``turn:turn.example.org:3478`` when
the server runs behind NAT (Docker); a TURN server's username and credential come from
``$HAND2WORLD_ICE_USERNAME`` / ``$HAND2WORLD_ICE_CREDENTIAL`` (kept off the command line).

``bench latency`` starts the app in-process on 127.0.0.1, replays the real cup video's MediaPipe
landmarks at 30 Hz through a real client (aiortc WebRTC or WebSocket) and reports the server-side
latency from a ``hands`` message arriving to the first frame conditioned on it leaving the server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import time

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace, **over):
    from hand2world.server.session import ServerConfig

    ice = tuple(args.ice_host) if getattr(args, "ice_host", None) else None
    servers = getattr(args, "ice_server", None)
    if servers is None:
        servers = [u for u in re.split(r"[\s,]+", os.environ.get("HAND2WORLD_ICE_SERVERS", "")) if u]
    kw = dict(ice_servers=tuple(servers), ice_username=os.environ.get("HAND2WORLD_ICE_USERNAME") or None,
              ice_credential=os.environ.get("HAND2WORLD_ICE_CREDENTIAL") or None,
              height=args.height, width=args.width, max_fps=args.max_fps, source=args.source,
              weights=getattr(args, "weights", None), device=getattr(args, "device", "cpu"),
              max_sessions=getattr(args, "max_sessions", 4), kiosk=getattr(args, "kiosk", False), ice_hosts=ice)
    kw.update(over)
    return ServerConfig(**kw)


def _cmd_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from hand2world.server.app import create_app
    from hand2world.server.webrtc import rtc_configuration

    torch.set_num_threads(args.threads)
    config = _config(args)
    try:
        rtc_configuration(config)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if config.source != "preview":  # fail fast, before serving, when the generator cannot load
        from hand2world.server.sources import load_source

        try:
            load_source(config.source, config.height, config.width, config.fov_deg, config.weights, config.device)
        except (RuntimeError, ValueError, OSError) as exc:
            log.error("cannot start the %s source: %s", config.source, exc)
            return 2
    app = create_app(config, upload_root=args.uploads)
    logging.getLogger("aioice").setLevel(logging.WARNING)
    log.info("hand2world live (%s mode): open http://%s:%d/", "preview" if config.source == "preview"
             else "generator", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", ws_max_size=4 * 1024 * 1024)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=int, default=240, help="output frame height")
    p.add_argument("--width", type=int, default=320, help="output frame width")
    p.add_argument("--max-fps", type=float, default=30.0, help="video-track pacing ceiling")
    p.add_argument("--source", default="preview", choices=["preview", "generator"],
                   help="frame source: preview (control render over the scene photo) or generator (video model)")


async def _latency(args: argparse.Namespace) -> dict:
    import json

    import numpy as np
    import websockets

    from hand2world.eval.bench import summarize
    from hand2world.server.app import create_app
    from hand2world.server.clients import LocalServer, WebRTCClient, cup_hand_messages

    logging.getLogger("aioice").setLevel(logging.WARNING)
    msgs = await asyncio.to_thread(cup_hand_messages, 90)
    app = create_app(_config(args, ice_hosts=("127.0.0.1",), ice_servers=()))  # loopback only
    registry = app.state.registry
    n = int(args.seconds * args.rate)
    async with LocalServer(app) as url:
        if args.transport == "webrtc":
            client = await WebRTCClient().connect(url)
            await asyncio.sleep(0.5)
            for i in range(n):
                client.send({**msgs[i % len(msgs)], "t": i * 1000.0 / args.rate})
                await asyncio.sleep(1.0 / args.rate)
            await asyncio.sleep(0.5)
            session = next(iter(registry.sessions.values()))
            lat, frames, stats = list(session.stats_.all_latencies), client.frames, session.stats()
            await client.close()
        else:
            async with websockets.connect(url.replace("http", "ws") + "/ws", max_size=2**22) as ws:
                await ws.send(json.dumps({"type": "start", "scene": "coffee"}))
                frames = 0

                async def reader() -> None:
                    nonlocal frames
                    async for m in ws:
                        frames += isinstance(m, bytes)

                rt = asyncio.create_task(reader())
                for i in range(n):
                    await ws.send(json.dumps({**msgs[i % len(msgs)], "t": i * 1000.0 / args.rate}))
                    await asyncio.sleep(1.0 / args.rate)
                await asyncio.sleep(0.5)
                session = next(iter(registry.sessions.values()))
                lat, stats = list(session.stats_.all_latencies), session.stats()
                rt.cancel()
    out = summarize(lat[5:]) if len(lat) > 6 else {"n": len(lat)}
    return {"what": f"hands message received -> first frame conditioned on it leaves the server ({args.transport}, "
                    f"{stats['mode']} source, {args.width}x{args.height}, {args.rate:g} Hz input)",
            **out, "frames_received": frames, "messages_sent": n, "messages_skipped": stats["messages_dropped"],
            "server_fps": float(np.round(len(lat) / args.seconds, 1)), "mode": stats["mode"]}


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``bench latency``."""
    from hand2world.eval.bench import add_benchmark

    p = sub.add_parser("serve", help="live app: FastAPI + WebRTC + WebSocket (open http://HOST:PORT/)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to serve other machines)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--weights", default=None, help="generator weights (path or registry name) for --source generator")
    p.add_argument("--device", default="cpu", help="torch device of the generator")
    p.add_argument("--max-sessions", type=int, default=4)
    p.add_argument("--kiosk", action="store_true", help="kiosk mode: the page starts by itself, full-screen output")
    p.add_argument("--ice-host", action="append", default=None,
                   help="offer WebRTC host candidates only on this address (repeatable), e.g. 127.0.0.1")
    p.add_argument("--ice-server", action="append", default=None, metavar="URL",
                   help="STUN/TURN server for WebRTC (repeatable), e.g. turn:turn.example.org:3478; default "
                        "$HAND2WORLD_ICE_SERVERS; TURN credentials from $HAND2WORLD_ICE_USERNAME / "
                        "$HAND2WORLD_ICE_CREDENTIAL")
    p.add_argument("--uploads", default=None, help="folder for scene uploads (default: a temp folder, removed)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    _add_common(p)
    p.set_defaults(func=_cmd_serve)

    def configure(p: argparse.ArgumentParser) -> None:
        _add_common(p)
        p.add_argument("--transport", default="webrtc", choices=["webrtc", "ws"])
        p.add_argument("--seconds", type=float, default=10.0)
        p.add_argument("--rate", type=float, default=30.0, help="hands messages per second")

    def run(args: argparse.Namespace) -> dict:
        t0 = time.perf_counter()
        result = asyncio.run(_latency(args))
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        return result

    add_benchmark(bench, "latency", "live server: hands message in -> conditioned frame out (p50/p95)", run,
                  configure, threads=1)
