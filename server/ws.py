"""WebSocket transport (``/ws``) for headsets and scripts: JSON messages in, JPEG frames out.

Protocol: the first message must be ``{"type": "start", "scene": NAME, "token"?: ...}`` (within
``START_TIMEOUT_S``); the server answers ``{"type": "started", ...}``; then ``hands`` / ``scene`` /
``reset`` messages. Out: each new frame as one binary message (JPEG), ``stats`` every
``stats_interval`` and ``error`` events as JSON text.

Design choices: one receiver task (parse, validate, submit) and one sender task (the only
writer on the socket: frames, stats, events), so a slow client only slows its own sender, and the
frame slot drops what it cannot take. Oversized or malformed messages get an ``error`` and the
connection stays open; only a bad or missing ``start`` closes it (code 1008).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from hand2world.io import encode_jpeg
from hand2world.server.protocol import ProtocolError, SceneMessage, parse_message
from hand2world.server.scenes import SceneError
from hand2world.server.session import Session

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
JPEG_QUALITY = 85


async def _receive_text(ws: WebSocket) -> str | bytes | None:
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    return msg.get("text") if msg.get("text") is not None else msg.get("bytes")


async def serve_websocket(ws: WebSocket, new_session: Callable[[], Awaitable[Session | None]],
                          release: Callable[[Session], Awaitable[None]]) -> None:
    """Run one WebSocket client until it disconnects."""
    await ws.accept()
    try:
        raw = await asyncio.wait_for(_receive_text(ws), START_TIMEOUT_S)
        first = parse_message(raw or "")
        if not isinstance(first, SceneMessage) or first.type != "start":
            raise ProtocolError('the first message must be {"type": "start", "scene": NAME}', "expected_start")
    except TimeoutError:
        await ws.send_json({"type": "error", "error": "expected_start", "detail": "no start message in time"})
        await ws.close(1008)
        return
    except ProtocolError as exc:
        await ws.send_json(exc.to_dict())
        await ws.close(1008)
        return
    except WebSocketDisconnect:
        return
    try:
        session = await new_session()
    except RuntimeError as exc:  # SessionUnavailable
        await ws.send_json({"type": "error", "error": "server_error", "detail": str(exc)})
        await ws.close(1011)
        return
    if session is None:
        await ws.send_json({"type": "error", "error": "busy", "detail": "server at its session limit; retry later"})
        await ws.close(1013)
        return
    try:
        try:
            await session.start(first.scene, first.token)
        except SceneError as exc:
            await ws.send_json({"type": "error", "error": "bad_scene", "detail": str(exc)})
            await ws.close(1008)
            return
        sender = asyncio.create_task(_sender(ws, session))
        try:
            while True:
                raw = await _receive_text(ws)
                try:
                    session.submit(parse_message(raw or ""))
                except ProtocolError as exc:
                    session.report(exc)
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the socket is gone
                pass
    finally:
        await release(session)


async def _sender(ws: WebSocket, session: Session) -> None:
    last, next_stats = 0, 0.0
    interval = session.config.stats_interval
    while True:
        while not session.outbox.empty():
            await ws.send_text(json.dumps(session.outbox.get_nowait()))
        frame = await session.frames.wait(last, timeout=0.05)
        if frame is not None:
            last = frame.index
            jpeg = await asyncio.to_thread(encode_jpeg, frame.rgb, JPEG_QUALITY)
            await ws.send_bytes(jpeg)
            session.mark_sent(frame)
        now = time.perf_counter()
        if now >= next_stats:
            await ws.send_text(json.dumps(session.stats()))
            next_stats = now + interval
