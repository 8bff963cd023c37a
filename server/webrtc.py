"""WebRTC transport (aiortc): SDP offer -> answer, a paced video track out, the ``hands`` data channel.

Per peer connection: one ``Session``; the session's frames go out on ``SessionVideoTrack``; the
data channel named ``hands`` carries client messages in (validated by ``protocol.parse_message``,
errors sent back as ``{"type": "error"}``) and ``stats`` / events / control-render JPEGs out. A
client that sends a video track instead of landmarks gets server-side tracking
(``HandTracker`` in video mode on the newest received frame; older frames are skipped).

Design choices:
- Frame pacing in ``recv``: frames leave no faster than ``max_fps``; the track always sends the
  newest frame (the slot drops older ones); with nothing new for ``idle_s`` it repeats the last
  frame so the receiver's decoder and jitter buffer keep running.
- ``RTCConfiguration(iceServers=[])`` by default: no STUN/TURN request ever leaves the machine.
  ``ServerConfig.ice_servers`` (``hand2world serve --ice-server URL``) adds STUN/TURN servers, e.g.
  a TURN relay when the server runs behind NAT (Docker); ``rtc_configuration`` builds and checks
  them. aiortc uses the first STUN and the first TURN URL it can use (TURN over udp/tcp, TURNS
  over tcp) and ignores the rest.
  ``limit_ice_hosts`` restricts aioice's host-candidate discovery (it skips loopback by
  default): ``("127.0.0.1",)`` for loopback tests and network namespaces with only ``lo``.
  aioice has no option for it, so this swaps its module-level ``get_host_addresses`` for the
  whole process (documented; the CLI's ``--ice-host`` sets it).
- ``POST /offer`` (``router``): Origin and token checked first, the body read with its cap
  (``MAX_SDP_BYTES``) applied while reading, parsed by the same bounded JSON loader as messages.
  A peer that never connects or dies stops sending messages: the registry's idle timeout frees
  its slot (no separate watchdog).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hand2world.server.guard import ClientDisconnect, Refused, check_access, error_response, read_capped
from hand2world.server.protocol import HandsMessage, ProtocolError, loads, parse_message
from hand2world.server.scenes import DEFAULT_SCENE, SceneError
from hand2world.server.session import Endpoint

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000


def limit_ice_hosts(hosts: tuple[str, ...] | None) -> None:
    """Make aioice offer host candidates only on ``hosts`` (None restores its default discovery)."""
    import aioice.ice

    if not hasattr(aioice.ice, "_h2w_original_get_host_addresses"):
        aioice.ice._h2w_original_get_host_addresses = aioice.ice.get_host_addresses
    if hosts is None:
        aioice.ice.get_host_addresses = aioice.ice._h2w_original_get_host_addresses
        return
    fixed = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def rtc_configuration(config: Any) -> RTCConfiguration:
    """The peer-connection configuration for ``config.ice_servers`` (TURN URLs get the username/credential).

    Raises ``ValueError`` for a malformed URL or a TURN URL without a username and credential.
    """
    from aiortc.rtcicetransport import parse_stun_turn_uri

    servers = []
    for url in config.ice_servers:
        try:
            parsed = parse_stun_turn_uri(url)
        except ValueError as exc:
            raise ValueError(f"bad ICE server URL {url!r} ({exc}); expected stun:HOST[:PORT] or "
                             f"turn:HOST[:PORT][?transport=udp|tcp] / turns:HOST[:PORT]") from None
        if parsed["scheme"] in ("turn", "turns"):
            if not config.ice_username or not config.ice_credential:
                raise ValueError(f"TURN server {url!r} needs a username and credential "
                                 "(HAND2WORLD_ICE_USERNAME / HAND2WORLD_ICE_CREDENTIAL)")
            servers.append(RTCIceServer(urls=url, username=config.ice_username, credential=config.ice_credential))
        else:
            servers.append(RTCIceServer(urls=url))
    return RTCConfiguration(iceServers=servers)


def browser_ice_servers(config: Any) -> list[dict[str, str]]:
    """The same STUN/TURN servers as the page's ``RTCPeerConnection({iceServers})`` wants them.

    The browser must reach the TURN relay too when it is behind NAT; it gets the same (static,
    long-term) credentials the server uses. None configured: ``[]`` (host candidates only).
    """
    return [{k: v for k, v in (("urls", s.urls), ("username", s.username), ("credential", s.credential)) if v}
            for s in rtc_configuration(config).iceServers]


class SessionVideoTrack(MediaStreamTrack):
    """Outgoing video of one session, paced to at most ``max_fps``; late frames are never sent."""

    kind = "video"

    def __init__(self, session: Endpoint, max_fps: float = 30.0, idle_s: float = 0.5) -> None:
        super().__init__()
        self.session = session
        self.interval = 1.0 / max_fps
        self.idle_s = idle_s
        self._t0 = time.perf_counter()
        self._next = 0.0
        self._last_index = 0
        c = session.config
        self._last_rgb = np.zeros((c.height, c.width, 3), np.uint8)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.perf_counter()
        if now < self._next:
            await asyncio.sleep(self._next - now)
        frame = await self.session.frames.wait(self._last_index, timeout=self.idle_s)
        if frame is not None:
            self._last_index, self._last_rgb = frame.index, frame.rgb
            self.session.mark_sent(frame)
        now = time.perf_counter()
        self._next = now + self.interval
        out = VideoFrame.from_ndarray(self._last_rgb, format="rgb24")
        out.pts = int((now - self._t0) * VIDEO_CLOCK)
        out.time_base = Fraction(1, VIDEO_CLOCK)
        return out


async def track_incoming_video(track: MediaStreamTrack, session: Endpoint) -> None:
    """Server-side tracking: newest received frame -> MediaPipe -> ``hands`` message into the session."""
    from hand2world.tracking import HandTracker

    latest: list[Any] = [None]
    fresh = asyncio.Event()

    async def reader() -> None:
        while True:
            latest[0] = await track.recv()  # older frames are simply overwritten (skipped)
            fresh.set()

    try:
        tracker = await asyncio.to_thread(HandTracker, num_hands=2, mode="video")
    except Exception as exc:  # noqa: BLE001 - e.g. the model bundle is missing: tell the client, keep the session
        log.error("session %s: server-side tracking unavailable: %s", session.id, exc)
        session.emit({"type": "error", "error": "tracking_unavailable", "detail": str(exc)})
        return
    read_task = asyncio.create_task(reader())
    t0 = time.perf_counter()
    try:
        while not session.closed:
            await fresh.wait()
            fresh.clear()
            if read_task.done():
                break
            rgb = latest[0].to_ndarray(format="rgb24")
            t = time.perf_counter() - t0
            hands = await asyncio.to_thread(tracker.detect, rgb, None)
            session.submit(HandsMessage(t=t, hands=hands, c2w=None))
    except MediaStreamError:
        pass
    finally:
        read_task.cancel()
        await asyncio.to_thread(tracker.close)
        log.info("session %s: incoming video ended", session.id)


def _channel_send(channel: Any, data: str | bytes) -> bool:
    if channel.readyState != "open":
        return False
    # bounded: skip when the SCTP send buffer is backed up (a client that stopped reading)
    if channel.bufferedAmount > 1_000_000:
        return False
    channel.send(data)
    return True


async def _channel_loop(channel: Any, session: Endpoint) -> None:
    """Stats, events and control previews out on the data channel until the session closes."""
    c = session.config
    next_stats = next_control = 0.0
    while not session.closed and channel.readyState in ("connecting", "open"):
        try:
            event = await asyncio.wait_for(session.outbox.get(), timeout=0.05)
            _channel_send(channel, json.dumps(event))
        except TimeoutError:
            pass
        now = time.perf_counter()
        if now >= next_stats:
            _channel_send(channel, json.dumps(session.stats()))
            next_stats = now + c.stats_interval
        if c.control_preview_hz > 0 and now >= next_control:
            jpeg = session.control_jpeg()
            if jpeg is not None:
                _channel_send(channel, jpeg)
            next_control = now + 1.0 / c.control_preview_hz


def attach_channel(channel: Any, session: Endpoint) -> None:
    """Wire the ``hands`` data channel to the session."""

    @channel.on("message")
    def on_message(raw: str | bytes) -> None:
        if not session.accept():  # over the message budget: dropped unread
            return
        try:
            session.submit(parse_message(raw))
        except ProtocolError as exc:
            session.report(exc)

    task = asyncio.create_task(_channel_loop(channel, session))
    session.tasks.append(task)


async def answer_offer(session: Endpoint, sdp: str, kind: str, on_close: Any) -> tuple[RTCPeerConnection, dict]:
    """Create the peer connection for ``session`` and answer the client's offer.

    Raises ``ValueError`` with a clear message for an unusable offer.
    """
    pc = RTCPeerConnection(rtc_configuration(session.config))
    closed = asyncio.Event()

    async def close() -> None:
        if not closed.is_set():
            closed.set()
            await pc.close()
            await on_close()

    @pc.on("datachannel")
    def on_datachannel(channel: Any) -> None:
        if channel.label != "hands":
            log.warning("session %s: ignoring data channel %r", session.id, channel.label)
            return
        attach_channel(channel, session)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            session.tasks.append(asyncio.create_task(track_incoming_video(track, session)))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("session %s: connection %s", session.id, pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await close()

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            raise ValueError("the offer has no video m-line: add a video transceiver (recvonly or sendrecv)")
        pc.addTrack(SessionVideoTrack(session, session.config.max_fps))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except Exception as exc:
        await pc.close()
        raise ValueError(f"bad offer: {type(exc).__name__}: {exc}") from None

    # A peer that never connects, or is killed, sends no message: the registry's idle timeout frees its slot.
    pc.h2w_close = close  # type: ignore[attr-defined]
    return pc, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": session.id}


MAX_SDP_BYTES = 100_000


def router(ctx: Any) -> APIRouter:
    """``POST /offer``: ``{"sdp", "type": "offer", "scene"?, "token"?}`` -> ``{"sdp", "type": "answer", "session"}``."""
    r = APIRouter()
    config, registry = ctx.config, ctx.registry

    @r.post("/offer")
    async def offer(request: Request) -> Response:
        try:
            check_access(request, config)
            body = await read_capped(request, MAX_SDP_BYTES, "offers")
        except Refused as exc:
            return error_response(exc.status, exc.code, exc.detail)
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            data = loads(body, max_bytes=MAX_SDP_BYTES, max_depth=4)
        except ProtocolError as exc:
            return error_response(400, "bad_json", f"the offer must be JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("sdp"), str) or data.get("type") != "offer":
            return error_response(400, "bad_offer", 'expected {"sdp": "...", "type": "offer", "scene"?: NAME}')
        scene, token = data.get("scene", DEFAULT_SCENE), data.get("token")
        if not isinstance(scene, str) or (token is not None and not isinstance(token, str)):
            return error_response(400, "bad_offer", "scene and token must be strings")
        try:
            session = await registry.create(token)
        except RuntimeError as exc:  # SessionUnavailable
            return error_response(500, "server_error", str(exc))
        if session is None:
            return error_response(503, "busy", f"server at its limit of {config.max_sessions} sessions; retry later")
        try:
            await session.start(scene, token)
        except SceneError as exc:
            await registry.release(session)
            return error_response(exc.status, "bad_scene", str(exc))

        async def on_close() -> None:
            await registry.release(session)

        try:
            pc, answer = await answer_offer(session, data["sdp"], "offer", on_close)
        except ValueError as exc:
            await registry.release(session)
            return error_response(400, "bad_sdp", str(exc))
        registry.peers[session.id] = pc
        log.info("session %s: WebRTC answer sent (%d live)", session.id, len(registry.sessions))
        return JSONResponse(answer)

    return r
