"""Routes of scene photos: ``GET /scenes`` and ``POST /upload`` (checked, quota'd, capped while read)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hand2world.server.guard import (
    ClientDisconnect,
    Refused,
    check_access,
    check_token,
    client_address,
    error_response,
    read_capped,
)
from hand2world.server.registry import AppContext
from hand2world.server.scenes import DEFAULT_SCENE, MAX_UPLOAD_BYTES, SceneError

log = logging.getLogger(__name__)


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter()
    config, scenes, quota = ctx.config, ctx.scenes, ctx.quota

    @r.get("/scenes")
    async def list_scenes(request: Request, token: str | None = None) -> Response:
        try:
            check_token(request.headers, request.query_params, config.token)
        except Refused as exc:
            return error_response(exc.status, exc.code, exc.detail)
        return JSONResponse({"scenes": scenes.list(token), "default": DEFAULT_SCENE})

    @r.post("/upload")
    async def upload(request: Request, token: str | None = None) -> Response:
        try:
            check_access(request, config)
            ctype = request.headers.get("content-type", "")
            if not ctype.startswith("image/"):
                raise Refused(415, "bad_type", f"send the photo as the request body with an image/* content type, "
                                               f"got {ctype[:60]!r}")
            quota.acquire(client_address(request))
        except Refused as exc:
            return error_response(exc.status, exc.code, exc.detail)
        try:
            data = await read_capped(request, MAX_UPLOAD_BYTES, "uploads")
            token, name, (h, w) = await asyncio.to_thread(scenes.save_upload, data, token)
        except Refused as exc:
            return error_response(exc.status, exc.code, exc.detail)
        except SceneError as exc:
            return error_response(exc.status, "bad_upload", str(exc))
        except ClientDisconnect:
            log.info("upload from %s: the client left mid-body", client_address(request))
            return Response(status_code=499)
        finally:
            quota.release()
        return JSONResponse({"token": token, "scene": name, "height": h, "width": w})

    return r
