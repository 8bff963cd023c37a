"""Routes of the web page: the client files and the hand-tracking model bundle (all served from here)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from hand2world.paths import asset_path

CLIENT_FILES = {"": "index.html", "app.js": "app.js", "style.css": "style.css"}
# The page may load and connect to this server only (MediaPipe's bundle carries a telemetry logger
# that would POST to an outside host: connect-src 'self' makes the browser refuse it).
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob: mediastream:; style-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'")


def router(client: Path) -> APIRouter:
    r = APIRouter()

    def client_file(name: str):
        async def handler() -> FileResponse:
            return FileResponse(client / name, headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})
        return handler

    for route, name in CLIENT_FILES.items():
        r.add_api_route(f"/{route}", client_file(name), methods=["GET"], include_in_schema=False)

    @r.get("/models/hand_landmarker.task", include_in_schema=False)
    async def model_bundle() -> FileResponse:
        return FileResponse(asset_path("hand_landmarker.task"), media_type="application/octet-stream")

    return r
