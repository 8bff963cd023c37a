"""WebSocket transport (``/ws``) for headsets and scripts: JSON messages in, JPEG frames out.

Protocol: the first message must be ``{"type": "start", "scene": NAME, "token"?: ...}`` (within
``START_TIMEOUT_S``); the server answers ``{"type": "started", ...}``; then ``hands`` / ``scene`` /
``reset`` messages. Out: each new frame as one binary message (JPEG), ``stats`` every
``stats_interval`` and ``error`` events as JSON text.

Design choices: one receiver task (budget pacing, parse, validate, submit) and one sender task (the only
writer on the socket: frames, stats, events), so a slow client only slows its own sender, and the
frame slot drops what it cannot take. Oversized or malformed messages get an ``error`` and the
connection stays open (the receiver stops reading while many replies wait, so every refused
message gets its reply); only a bad or missing ``start`` closes it (code 1008). When the server
ends the session (``Endpoint.end``: the idle timeout, ``idle_timeout``) the client gets an error
event with the reason and a close 1000.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from hand2world.io import encode_jpeg
from hand2world.server.guard import Refused, check_access
from hand2world.server.protocol import ProtocolError, SceneMessage, parse_message
from hand2world.server.scenes import SceneError
from hand2world.server.session import Endpoint

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
JPEG_QUALITY = 85
OUTBOX_HIGH = 128  # the receiver pauses while this many events wait to be sent


async def _receive_text(ws: WebSocket) -> str | bytes | None:
    msg = await ws.receive()
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    return msg.get("text") if msg.get("text") is not None else msg.get("bytes")


async def serve_websocket(ws: WebSocket, new_session: Callable[[], Awaitable[Endpoint | None]],
                          release: Callable[[Endpoint], Awaitable[None]]) -> None:
    """Run one WebSocket client until it disconnects or its session ends (idle timeout, kiosk)."""
    await ws.accept()
    try:
        raw = await asyncio.wait_for(_receive_text(ws), START_TIMEOUT_S)
        first = parse_message(raw or "")
        if not isinstance(first, SceneMessage) or first.type != "start":
            raise ProtocolError('the first message must be {"type": "start", "scene": NAME}', "expected_start")
    except TimeoutError:
        await _refuse(ws, {"type": "error", "error": "expected_start", "detail": "no start message in time"}, 1008)
        return
    except ProtocolError as exc:
        await _refuse(ws, exc.to_dict(), 1008)
        return
    except WebSocketDisconnect:
        return
    try:
        session = await new_session()
    except RuntimeError as exc:  # SessionUnavailable
        await _refuse(ws, {"type": "error", "error": "server_error", "detail": str(exc)}, 1011)
        return
    if session is None:
        await _refuse(ws, {"type": "error", "error": "busy", "detail": "server at its session limit; retry later"},
                      1013)
        return
    try:
        try:
            await session.start(first.scene, first.token)
        except SceneError as exc:
            await _refuse(ws, {"type": "error", "error": "bad_scene", "detail": str(exc)}, 1008)
            return
        receiver = asyncio.create_task(_receiver(ws, session), name=f"ws-recv-{session.id}")
        sender = asyncio.create_task(_sender(ws, session), name=f"ws-send-{session.id}")
        session.tasks += [receiver, sender]
        ended = asyncio.create_task(session.ended.wait())
        try:
            await asyncio.wait({receiver, sender, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, ended, return_exceptions=True)
        reason = session.end_reason
        if reason is not None:  # the server ended it: say why, then close
            detail = END_REASONS.get(reason, reason)
            await _refuse(ws, {"type": "error", "error": reason, "detail": detail}, 1000)
    finally:
        await release(session)


END_REASONS = {"idle_timeout": "no message within the idle timeout; the session was closed to free its slot",
               "flooding": "more than twice the message budget for several seconds; the session was closed"}


async def _refuse(ws: WebSocket, event: dict, code: int) -> None:
    """Send a last error event and close; the client may already be gone."""
    try:
        await asyncio.wait_for(ws.send_json(event), 2.0)
        await asyncio.wait_for(ws.close(code), 2.0)
    except (WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
        pass


async def _receiver(ws: WebSocket, session: Endpoint) -> None:
    """Parse and submit messages, paced by the session's budget (no read beyond it); errors go back as events."""
    try:
        while True:
            await session.paced()
            raw = await _receive_text(ws)
            try:
                session.submit(parse_message(raw or ""))
            except ProtocolError as exc:
                session.report(exc)
                while session.outbox.qsize() > OUTBOX_HIGH and not session.closed:
                    await asyncio.sleep(0.01)  # stop reading until the replies are out (TCP pushes back)
    except WebSocketDisconnect:
        pass


async def _sender(ws: WebSocket, session: Endpoint) -> None:
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


async def _refused(ws: WebSocket, config: Any) -> bool:
    """Check Origin and token at the handshake; a refusal closes it before accept (the client sees 403)."""
    try:
        check_access(ws, config)
    except Refused as exc:
        log.info("websocket refused: %s", exc.detail)
        await ws.close(1008, reason=exc.code)
        return True
    return False


def router(ctx: Any) -> APIRouter:
    """``WS /ws`` (no session is made for a refused handshake)."""

    async def websocket(ws: WebSocket) -> None:
        if not await _refused(ws, ctx.config):
            await serve_websocket(ws, ctx.registry.create, ctx.registry.release)

    r = APIRouter()
    r.add_api_websocket_route("/ws", websocket)
    return r
