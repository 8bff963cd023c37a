"""Who may use the live app, and how much: Origin and token checks, capped body reads, upload quotas, headers.

Design choices:
- Origin (``/ws``, ``/offer``, ``/upload``): a browser always sends ``Origin`` on a WebSocket
  handshake and on a cross-site POST, so a request whose Origin is neither this server's own
  (the ``Host`` it was sent to) nor one of ``allow_origins`` is refused with 403; that stops any
  other web page from opening sessions through a visitor's browser. Requests without an Origin
  (scripts, headset apps, aiortc) are not browsers acting for another site and pass; ``--token``
  is the check for them.
- The access token (``--token``), when set, is required on ``/offer``, ``/ws``, ``/upload`` and
  ``/scenes`` as the query parameter ``access_token`` or an ``Authorization: Bearer`` header,
  compared in constant time. The page forwards the ``access_token`` of its own URL.
- Bodies are read with the cap applied while reading (``read_capped``): a 256 MB body costs at
  most the cap, never the whole body; a declared ``Content-Length`` over the cap is refused unread.
- Uploads: ``UploadQuota`` allows each client address ``per_client`` uploads per ``window_s`` and
  at most ``concurrency`` uploads in flight server-wide (503 beyond, before reading the body).
- Every HTTP response carries ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``
  (``SecurityHeaders``, pure ASGI, so WebSockets and streaming pass untouched).
"""

from __future__ import annotations

import collections
import hmac
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request refused by a guard: HTTP ``status``, error ``code`` and a ``detail`` for the client."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.lower() if parts.scheme in ("http", "https") else ""


def check_origin(headers: Mapping[str, str], allow_origins: tuple[str, ...] = ()) -> None:
    """Raise ``Refused(403)`` unless the request has no Origin, this server's own, or an allowed one."""
    origin = headers.get("origin")
    if origin is None:
        return
    if origin in allow_origins or "*" in allow_origins:
        return
    host = (headers.get("host") or "").lower()
    if host and _netloc(origin) == host:
        return
    raise Refused(403, "bad_origin", f"origin {origin[:100]!r} may not use this server (same origin only; "
                                     "start it with --allow-origin ORIGIN to allow another page)")


def check_token(headers: Mapping[str, str], query: Mapping[str, str], token: str | None) -> None:
    """Raise ``Refused(401)`` unless ``token`` is unset or given (``access_token`` query / Bearer header)."""
    if token is None:
        return
    given = query.get("access_token")
    auth = headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise Refused(401, "bad_token", "this server needs an access token: add ?access_token=TOKEN")


def check_access(conn: HTTPConnection, config: Any) -> None:
    """Origin, then token, of a request or WebSocket handshake against ``config`` (a ``ServerConfig``)."""
    check_origin(conn.headers, config.allow_origins)
    check_token(conn.headers, conn.query_params, config.token)


async def read_capped(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it grows past ``limit`` bytes.

    Raises ``ClientDisconnect`` when the client leaves mid-body (the caller answers nobody).
    """
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Refused(413, "too_large", f"{what} are limited to {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise Refused(413, "too_large", f"{what} are limited to {limit} bytes")
    return bytes(data)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class UploadQuota:
    """Per-client upload counts in a sliding window, plus a server-wide cap on uploads in flight."""

    def __init__(self, per_client: int, window_s: float, concurrency: int) -> None:
        self.per_client, self.window_s, self.concurrency = per_client, window_s, concurrency
        self._times: dict[str, collections.deque[float]] = {}
        self._in_flight = 0

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        q = self._times.setdefault(client, collections.deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def acquire(self, client: str) -> None:
        """Admit one upload from ``client`` or raise ``Refused`` (429 over quota, 503 when busy)."""
        now = time.monotonic()
        q = self._recent(client, now)
        if len(q) >= self.per_client:
            wait = self.window_s - (now - q[0])
            raise Refused(429, "upload_quota", f"at most {self.per_client} uploads per {self.window_s:g} s "
                                               f"from one client; try again in {wait:.0f} s")
        if self._in_flight >= self.concurrency:
            raise Refused(503, "busy", f"{self.concurrency} uploads are being processed; retry in a moment")
        self._in_flight += 1
        q.append(now)
        if len(self._times) > 10_000:  # forget clients with nothing in the window
            for key in [k for k, v in self._times.items() if not self._recent(k, now)]:
                del self._times[key]

    def release(self) -> None:
        self._in_flight -= 1


class SecurityHeaders:
    """ASGI middleware adding ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy`` to HTTP responses."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self.HEADERS if k not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["ClientDisconnect", "Refused", "SecurityHeaders", "UploadQuota", "check_access", "check_origin",
           "check_token", "client_address", "read_capped"]


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """Every refusal of the app: ``{"error", "detail"}`` with a 4xx/5xx status."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status)
