"""The FastAPI app: routers per concern, the security-header middleware, the lifespan.

Routes (each router in its own module):
- ``pages``: ``GET /`` (``client/index.html``), ``/app.js``, ``/style.css``,
  ``/models/hand_landmarker.task``; ``GET /vendor/tasks-vision/...`` (MediaPipe Tasks vision JS +
  wasm from ``client/node_modules``, mounted here). The page requests nothing outside this server.
- ``webrtc``: ``POST /offer``: ``{"sdp", "type": "offer", "scene"?, "token"?}`` ->
  ``{"sdp", "type": "answer", "session"}``.
- ``ws``: ``WS /ws``: the WebSocket API.
- ``uploads``: ``GET /scenes?token=``; ``POST /upload?token=``: a photo as the raw request body
  (JPEG/PNG/WebP, at most 8 MB) -> ``{"token", "scene", "height", "width"}``.
- ``info``: ``GET /config``, ``GET /schema`` (message JSON schemas), ``GET /healthz``, ``GET /metrics``.

Design choices: one ``Endpoint`` per WebRTC peer or WebSocket (a ``Session``, or in kiosk mode a
``KioskSeat`` of the one shared screen), at most ``max_sessions`` at once (503 / close 1013
beyond), each closed after ``idle_timeout_s`` without a message; every error is a JSON
``{"error", "detail"}`` with a 4xx/5xx status, and no request can take down another session.
``/ws``, ``/offer`` and ``/upload`` check Origin (and ``--token``) first (``guard``). FastAPI's
``/docs`` and ``/redoc`` are off: they load scripts from a CDN; ``/openapi.json`` stays.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hand2world.paths import client_dir
from hand2world.server import info, pages, uploads, webrtc, ws
from hand2world.server.guard import SecurityHeaders, UploadQuota
from hand2world.server.kiosk import Kiosk
from hand2world.server.registry import AppContext, Registry, SessionUnavailable
from hand2world.server.scenes import SceneStore
from hand2world.server.session import ServerConfig
from hand2world.server.webrtc import limit_ice_hosts, rtc_configuration

log = logging.getLogger(__name__)

__all__ = ["Registry", "SessionUnavailable", "create_app"]


def create_app(config: ServerConfig | None = None, upload_root: str | Path | None = None) -> FastAPI:
    """Build the app. ``upload_root``: where uploads go (a fresh temp folder by default, removed at exit)."""
    config = config if config is not None else ServerConfig()
    scenes = SceneStore(upload_root, store_size=(config.height, config.width),
                        disk_bytes=int(config.upload_disk_mb * 1024 * 1024))
    kiosk = Kiosk(config, scenes) if config.kiosk else None
    registry = Registry(config, scenes, kiosk)
    quota = UploadQuota(config.upload_per_client, config.upload_window_s, config.upload_concurrency)
    ctx = AppContext(config, registry, scenes, quota, kiosk)
    if config.ice_hosts is not None:
        limit_ice_hosts(config.ice_hosts)
    rtc_configuration(config)  # a bad --ice-server fails here, not at the first offer

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if kiosk is not None:
            await kiosk.start()
        registry.start()
        yield
        await registry.close_all()
        if kiosk is not None:
            await kiosk.close()
        scenes.close()

    app = FastAPI(title="hand2world live", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(SecurityHeaders)
    app.state.registry = registry
    app.state.config = config
    app.state.context = ctx
    client = client_dir()
    vendor = client / "node_modules" / "@mediapipe" / "tasks-vision"
    if vendor.is_dir():
        app.mount("/vendor/tasks-vision", StaticFiles(directory=vendor), name="tasks-vision")
    else:
        log.warning("MediaPipe Tasks vision not found at %s (run `npm ci` in client/)", vendor)
    app.include_router(pages.router(client))
    app.include_router(info.router(ctx))
    app.include_router(uploads.router(ctx))
    app.include_router(webrtc.router(ctx))
    app.include_router(ws.router(ctx))
    return app
