"""Python clients of the live app (WebRTC via aiortc, WebSocket via websockets), plus an in-process server.

Used by the latency benchmark, the tests and scripts; they are plain clients of the public
protocol, nothing server-internal. ``LocalServer`` runs the app with uvicorn on 127.0.0.1 (a
free port) inside the current event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import httpx
import numpy as np
import uvicorn
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from fastapi import FastAPI

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def wait_until(cond: Any, timeout: float, poll: float = 0.05) -> bool:
    """Poll ``cond()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            return False
        await asyncio.sleep(poll)
    return True


class LocalServer:
    """``async with LocalServer(app) as base_url:`` serves ``app`` on 127.0.0.1 until the block ends."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                                    ws_max_size=4 * 1024 * 1024, lifespan="on"))
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> str:
        self._task = asyncio.create_task(self.server.serve())
        t0 = time.monotonic()
        while not self.server.started:
            if self._task.done():
                self._task.result()
            if time.monotonic() - t0 > 20:
                raise TimeoutError("server did not start")
            await asyncio.sleep(0.02)
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 20)


class WebRTCClient:
    """A WebRTC client: data channel ``hands`` + receive-only (or send-recv) video.

    Attributes filled while connected: ``frames`` (received count), ``last_frame`` (uint8 RGB),
    ``frame_times``, ``stats`` (latest stats message), ``events`` (other JSON messages),
    ``errors`` (error messages), ``controls`` (control-render JPEGs received).
    """

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("hands")
        self.frames = 0
        self.frame_times: list[float] = []
        self.last_frame: np.ndarray | None = None
        self.stats: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.controls = 0
        self.session: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._open = asyncio.Event()

        @self.channel.on("open")
        def on_open() -> None:
            self._open.set()

        @self.channel.on("message")
        def on_message(raw: str | bytes) -> None:
            if isinstance(raw, bytes):
                self.controls += 1
                return
            msg = json.loads(raw)
            if msg.get("type") == "stats":
                self.stats = msg
            elif msg.get("type") == "error":
                self.errors.append(msg)
            else:
                self.events.append(msg)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames += 1
                self.frame_times.append(time.perf_counter())
                self.last_frame = frame.to_ndarray(format="rgb24")
        except MediaStreamError:
            pass

    async def connect(self, base_url: str, scene: str = "coffee", token: str | None = None,
                      send_video: MediaStreamTrack | None = None, timeout: float = 20.0) -> WebRTCClient:
        if send_video is not None:
            self.pc.addTrack(send_video)
        else:
            self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "scene": scene}
        if token:
            body["token"] = token
        async with httpx.AsyncClient(timeout=timeout) as http:
            r = await http.post(f"{base_url}/offer", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"offer refused: {r.status_code} {r.text}")
        answer = r.json()
        self.session = answer.get("session")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self._open.wait(), timeout)
        return self

    def send(self, msg: dict | str | bytes) -> None:
        self.channel.send(json.dumps(msg) if isinstance(msg, dict) else msg)

    async def wait_frames(self, n: int, timeout: float) -> int:
        t0 = time.monotonic()
        while self.frames < n and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.05)
        return self.frames

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class WebSocketClient:
    """Reads a connected ``/ws`` WebSocket: ``frames`` (JPEG count), ``last_jpeg``, ``stats``, ``errors``,
    ``events`` (other JSON messages) and ``closed_code`` once the server closed it.

    ``await client.read()`` runs until the socket closes; ``start()`` runs it as a task (``task``).
    """

    def __init__(self, ws: Any) -> None:
        self.ws, self.frames = ws, 0
        self.errors: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.last_jpeg: bytes | None = None
        self.closed_code: int | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> WebSocketClient:
        self.task = asyncio.create_task(self.read())
        return self

    async def read(self) -> None:
        import websockets

        try:
            async for m in self.ws:
                if isinstance(m, bytes):
                    self.frames += 1
                    self.last_jpeg = m
                    continue
                msg = json.loads(m)
                kind = msg.get("type")
                if kind == "stats":
                    self.stats = msg
                elif kind == "error":
                    self.errors.append(msg)
                else:
                    self.events.append(msg)
        except websockets.ConnectionClosed:
            pass
        self.closed_code = self.ws.close_code

    def last_frame(self) -> np.ndarray:
        """The newest frame, uint8 RGB."""
        import cv2

        return cv2.imdecode(np.frombuffer(self.last_jpeg or b"", np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

    def kiosk(self) -> dict[str, Any]:
        """The newest ``kiosk`` event (kiosk mode), or {}."""
        return next((e for e in reversed(self.events) if e.get("type") == "kiosk"), {})


def cup_hand_messages(n: int = 60, fps: float = 30.0) -> list[dict[str, Any]]:
    """Wire ``hands`` messages of the real cup video's first ``n`` frames (MediaPipe, video mode)."""
    from hand2world.io import iter_frames
    from hand2world.paths import asset_path
    from hand2world.server.protocol import hands_message
    from hand2world.tracking import HandTracker

    msgs = []
    with HandTracker(num_hands=2, mode="video") as tracker:
        for i, rgb in enumerate(iter_frames(asset_path("cup.mp4"), max_frames=n)):
            msgs.append(hands_message(tracker.detect(rgb), i * 1000.0 / fps))
    return msgs
