"""Routes that describe the server: ``/healthz``, ``/metrics``, ``/config`` (every setting the page and
operators need, including the kiosk and limit flags), ``/schema``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from hand2world.server.guard import Refused, check_token
from hand2world.server.protocol import MAX_MESSAGE_BYTES, SCHEMAS
from hand2world.server.registry import AppContext
from hand2world.server.scenes import DEFAULT_SCENE, MAX_UPLOAD_BYTES
from hand2world.server.webrtc import browser_ice_servers


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter()
    config, registry = ctx.config, ctx.registry

    @r.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "sessions": len(registry.sessions), "max_sessions": config.max_sessions,
                "source": config.source}

    @r.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(registry.metrics(), media_type="text/plain; version=0.0.4")

    @r.get("/config")
    async def get_config(request: Request) -> dict:
        c = config
        mode = "preview" if c.source == "preview" else "generator"
        try:  # TURN credentials only for those who may connect
            check_token(request.headers, request.query_params, c.token)
            ice = browser_ice_servers(c)
        except Refused:
            ice = []
        out = {"mode": mode, "source": c.source, "width": c.width, "height": c.height, "max_fps": c.max_fps,
               "default_scene": DEFAULT_SCENE, "max_message_bytes": MAX_MESSAGE_BYTES,
               "max_upload_bytes": MAX_UPLOAD_BYTES, "ice_servers": ice, "kiosk": c.kiosk,
               "kiosk_idle_s": c.kiosk_idle_s, "kiosk_turn_s": c.kiosk_turn_s, "kiosk_attract_s": c.kiosk_attract_s,
               "max_sessions": c.max_sessions, "idle_timeout_s": c.idle_timeout_s, "message_rate": c.message_rate,
               "message_burst": c.message_burst, "allow_origins": list(c.allow_origins),
               "token_required": c.token is not None, "upload_per_client": c.upload_per_client,
               "upload_window_s": c.upload_window_s, "upload_disk_mb": c.upload_disk_mb,
               "upload_concurrency": c.upload_concurrency}
        return out

    @r.get("/schema")
    async def schema() -> dict:
        return SCHEMAS

    return r
