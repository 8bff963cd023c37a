"""The FastAPI app: serves the client, answers WebRTC offers, runs the WebSocket API, takes scene uploads.

Routes:
- ``GET /``: the web client (``client/index.html``); ``/app.js``, ``/style.css``.
- ``GET /vendor/tasks-vision/...``: MediaPipe Tasks vision JS + wasm from ``client/node_modules``;
  ``GET /models/hand_landmarker.task``: the set-up's model bundle (``asset_path``). The page
  requests nothing outside this server.
- ``POST /offer``: ``{"sdp", "type": "offer", "scene"?, "token"?}`` -> ``{"sdp", "type": "answer", "session"}``.
- ``WS /ws``: the WebSocket API (see ``ws``).
- ``GET /scenes?token=``: scene names; ``POST /upload?token=``: a photo as the raw request body
  (JPEG/PNG/WebP, at most 8 MB) -> ``{"token", "scene"}``.
- ``GET /config``, ``GET /schema`` (message JSON schemas), ``GET /healthz``, ``GET /metrics`` (Prometheus text).

Design choices: one ``Session`` per WebRTC peer or WebSocket, at most ``max_sessions`` at once
(503 / close 1013 beyond); every error is a JSON ``{"error", "detail"}`` with a 4xx status, and
no request can take down another session. Uploads are streamed with a byte cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from hand2world.paths import asset_path, client_dir
from hand2world.server.protocol import MAX_MESSAGE_BYTES, SCHEMAS
from hand2world.server.scenes import DEFAULT_SCENE, MAX_UPLOAD_BYTES, SceneError, SceneStore
from hand2world.server.session import ServerConfig, Session
from hand2world.server.webrtc import answer_offer, browser_ice_servers, limit_ice_hosts, rtc_configuration
from hand2world.server.ws import serve_websocket

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 100_000
CLIENT_FILES = {"": "index.html", "app.js": "app.js", "style.css": "style.css"}
# The page may load and connect to this server only (MediaPipe's bundle carries a telemetry logger
# that would POST to an outside host: connect-src 'self' makes the browser refuse it).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob: mediastream:; style-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'")


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


class SessionUnavailable(RuntimeError):
    """A session could not be built (e.g. a missing model asset); the message says why."""


class Registry:
    """Live sessions, capped at ``max_sessions``."""

    def __init__(self, config: ServerConfig, scenes: SceneStore) -> None:
        self.config, self.scenes = config, scenes
        self.sessions: dict[str, Session] = {}
        self.peers: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.closed_totals = {"messages_in": 0, "messages_dropped": 0, "hands_seen": 0, "frames_out": 0,
                              "frames_dropped": 0, "errors": 0}
        self.sessions_total = 0

    async def create(self, token: str | None = None) -> Session | None:
        async with self._lock:
            if len(self.sessions) >= self.config.max_sessions:
                return None
            try:
                session = await asyncio.to_thread(Session, self.config, self.scenes, token)
            except Exception as exc:
                log.exception("could not create a session")
                raise SessionUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self.sessions[session.id] = session
            self.sessions_total += 1
            return session

    async def release(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is not None:
            stats = session.stats()
            for key in self.closed_totals:
                self.closed_totals[key] += stats[key]
        pc = self.peers.pop(session.id, None)
        await session.close()
        if pc is not None:
            await pc.close()
        log.info("session %s closed (%d live)", session.id, len(self.sessions))

    def metrics(self) -> str:
        """Prometheus text exposition: counters over all sessions, gauges and latency of the live ones."""
        totals = dict(self.closed_totals)
        latencies: list[float] = []
        for session in self.sessions.values():
            stats = session.stats()
            for key in totals:
                totals[key] += stats[key]
            latencies += list(session.stats_.all_latencies)[-300:]
        lines = [
            "# TYPE hand2world_sessions gauge", f"hand2world_sessions {len(self.sessions)}",
            "# TYPE hand2world_sessions_max gauge", f"hand2world_sessions_max {self.config.max_sessions}",
            "# TYPE hand2world_sessions_total counter", f"hand2world_sessions_total {self.sessions_total}",
        ]
        for key, value in totals.items():
            lines += [f"# TYPE hand2world_{key}_total counter", f"hand2world_{key}_total {value}"]
        if latencies:
            lines.append("# TYPE hand2world_latency_ms summary")
            for q in (0.5, 0.95):
                lines.append(f'hand2world_latency_ms{{quantile="{q}"}} {float(np.quantile(latencies, q)):.2f}')
        return "\n".join(lines) + "\n"

    async def close_all(self) -> None:
        for session in list(self.sessions.values()):
            await self.release(session)


def create_app(config: ServerConfig | None = None, upload_root: str | Path | None = None) -> FastAPI:
    """Build the app. ``upload_root``: where uploads go (a fresh temp folder by default, removed at exit)."""
    config = config if config is not None else ServerConfig()
    scenes = SceneStore(upload_root)
    registry = Registry(config, scenes)
    if config.ice_hosts is not None:
        limit_ice_hosts(config.ice_hosts)
    rtc_configuration(config)  # a bad --ice-server fails here, not at the first offer

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await registry.close_all()
        scenes.close()

    app = FastAPI(title="hand2world live", lifespan=lifespan)
    app.state.registry = registry
    app.state.config = config
    client = client_dir()
    vendor = client / "node_modules" / "@mediapipe" / "tasks-vision"
    if vendor.is_dir():
        app.mount("/vendor/tasks-vision", StaticFiles(directory=vendor), name="tasks-vision")
    else:
        log.warning("MediaPipe Tasks vision not found at %s (run `npm ci` in client/)", vendor)

    def client_file(name: str):
        async def handler() -> FileResponse:
            return FileResponse(client / name, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})
        return handler

    for route, name in CLIENT_FILES.items():
        app.add_api_route(f"/{route}", client_file(name), methods=["GET"], include_in_schema=False)

    @app.get("/models/hand_landmarker.task", include_in_schema=False)
    async def model_bundle() -> FileResponse:
        return FileResponse(asset_path("hand_landmarker.task"), media_type="application/octet-stream")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "sessions": len(registry.sessions), "max_sessions": config.max_sessions,
                "source": config.source}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(registry.metrics(), media_type="text/plain; version=0.0.4")

    @app.get("/config")
    async def get_config() -> dict:
        mode = "preview" if config.source == "preview" else "generator"
        return {"mode": mode, "source": config.source, "width": config.width, "height": config.height,
                "max_fps": config.max_fps, "kiosk": config.kiosk, "default_scene": DEFAULT_SCENE,
                "max_message_bytes": MAX_MESSAGE_BYTES, "max_upload_bytes": MAX_UPLOAD_BYTES,
                "ice_servers": browser_ice_servers(config)}

    @app.get("/schema")
    async def schema() -> dict:
        return SCHEMAS

    @app.get("/scenes")
    async def list_scenes(token: str | None = None) -> dict:
        return {"scenes": scenes.list(token), "default": DEFAULT_SCENE}

    @app.post("/upload")
    async def upload(request: Request, token: str | None = None) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("image/"):
            return _error(415, "bad_type", f"send the photo as the request body with an image/* content type, "
                                           f"got {ctype!r}")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_UPLOAD_BYTES):
            return _error(413, "too_large", f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                return _error(413, "too_large", f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
        try:
            token, name, (h, w) = await asyncio.to_thread(scenes.save_upload, bytes(data), token)
        except SceneError as exc:
            return _error(exc.status, "bad_upload", str(exc))
        return JSONResponse({"token": token, "scene": name, "height": h, "width": w})

    @app.post("/offer")
    async def offer(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_SDP_BYTES:
            return _error(413, "too_large", f"offers are limited to {MAX_SDP_BYTES} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, "bad_json", f"the offer must be JSON: {exc}")
        if not isinstance(data, dict) or not isinstance(data.get("sdp"), str) or data.get("type") != "offer":
            return _error(400, "bad_offer", 'expected {"sdp": "...", "type": "offer", "scene"?: NAME}')
        scene, token = data.get("scene", DEFAULT_SCENE), data.get("token")
        if not isinstance(scene, str) or (token is not None and not isinstance(token, str)):
            return _error(400, "bad_offer", "scene and token must be strings")
        try:
            session = await registry.create(token)
        except SessionUnavailable as exc:
            return _error(500, "server_error", str(exc))
        if session is None:
            return _error(503, "busy", f"server at its limit of {config.max_sessions} sessions; retry later")
        try:
            await session.start(scene, token)
        except SceneError as exc:
            await registry.release(session)
            return _error(exc.status, "bad_scene", str(exc))

        async def on_close() -> None:
            await registry.release(session)

        try:
            pc, answer = await answer_offer(session, data["sdp"], "offer", on_close)
        except ValueError as exc:
            await registry.release(session)
            return _error(400, "bad_sdp", str(exc))
        registry.peers[session.id] = pc
        log.info("session %s: WebRTC answer sent (%d live)", session.id, len(registry.sessions))
        return JSONResponse(answer)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await serve_websocket(ws, registry.create, registry.release)

    return app
