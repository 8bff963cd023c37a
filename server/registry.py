"""Live sessions of one server: the cap, the idle timeout, release, and the counters ``/metrics`` shows.

Design choices:
- At most ``max_sessions`` endpoints at once; beyond it ``create`` answers None (the transports
  say ``busy``: 503 / close 1013).
- One reaper task (started with the app) releases endpoints a policy ended (``flooding``) and ends
  every endpoint that sent no valid message for
  ``idle_timeout_s`` (``Endpoint.last_activity``), checking four times a second, so a slot held
  by an idle WebSocket, an ``/offer`` that never connects or a killed WebRTC peer frees within
  the timeout + 0.25 s. It is the one mechanism for all three.
- In kiosk mode the endpoints are ``KioskSeat``s of the one ``Kiosk`` (cheap: no pipeline each).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hand2world.server.scenes import SceneStore
from hand2world.server.session import Endpoint, ServerConfig, Session

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.25


class SessionUnavailable(RuntimeError):
    """A session could not be built (e.g. a missing model asset); the message says why."""


class Registry:
    """Live endpoints, capped at ``max_sessions``, reaped after ``idle_timeout_s`` without a message."""

    def __init__(self, config: ServerConfig, scenes: SceneStore, kiosk: Any = None) -> None:
        self.config, self.scenes, self.kiosk = config, scenes, kiosk
        self.sessions: dict[str, Endpoint] = {}
        self.peers: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.closed_totals = {"messages_in": 0, "messages_dropped": 0, "hands_seen": 0, "frames_out": 0,
                              "frames_dropped": 0, "errors": 0, "messages_limited": 0}
        self.sessions_total = 0
        self.idle_closed = 0
        self._reaper: asyncio.Task | None = None

    async def create(self, token: str | None = None) -> Endpoint | None:
        async with self._lock:
            if len(self.sessions) >= self.config.max_sessions:
                return None
            try:
                if self.kiosk is not None:
                    session: Endpoint = self.kiosk.seat()
                else:
                    session = await asyncio.to_thread(Session, self.config, self.scenes, token)
            except Exception as exc:
                log.exception("could not create a session")
                raise SessionUnavailable(f"{type(exc).__name__}: {exc}") from exc
            self.sessions[session.id] = session
            self.sessions_total += 1
            return session

    async def release(self, session: Endpoint) -> None:
        if self.sessions.pop(session.id, None) is not None:
            stats = session.stats()
            for key in self.closed_totals:
                self.closed_totals[key] += stats.get(key) or 0
        pc = self.peers.pop(session.id, None)
        await session.close()
        if pc is not None:
            await pc.close()
        log.info("session %s closed (%d live)", session.id, len(self.sessions))

    # ---- idle timeout ----
    def start(self) -> None:
        """Start the reaper (called from the app's lifespan, inside the serving loop)."""
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="session-reaper")

    async def _reap(self) -> None:
        timeout = self.config.idle_timeout_s
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                idle = timeout > 0 and now - session.last_activity > timeout
                if idle or session.end_reason is not None:  # idle, or ended by a policy (flooding)
                    if idle and session.end_reason is None:
                        log.info("session %s: no message for %.1f s, closing", session.id,
                                 now - session.last_activity)
                        self.idle_closed += 1
                        session.end("idle_timeout")
                    try:
                        await self.release(session)
                    except Exception:  # noqa: BLE001 - one failing close must not stop the reaper
                        log.exception("session %s: release failed", session.id)

    def metrics(self) -> str:
        """Prometheus text exposition: counters over all sessions, gauges and latency of the live ones."""
        totals = dict(self.closed_totals)
        latencies: list[float] = []
        for session in self.sessions.values():
            stats = session.stats()
            for key in totals:
                totals[key] += stats.get(key) or 0
            latencies += session.latencies()[-300:]
        lines = [
            "# TYPE hand2world_sessions gauge", f"hand2world_sessions {len(self.sessions)}",
            "# TYPE hand2world_sessions_max gauge", f"hand2world_sessions_max {self.config.max_sessions}",
            "# TYPE hand2world_sessions_total counter", f"hand2world_sessions_total {self.sessions_total}",
            "# TYPE hand2world_sessions_idle_closed_total counter",
            f"hand2world_sessions_idle_closed_total {self.idle_closed}",
        ]
        for key, value in totals.items():
            lines += [f"# TYPE hand2world_{key}_total counter", f"hand2world_{key}_total {value}"]
        if latencies:
            lines.append("# TYPE hand2world_latency_ms summary")
            for q in (0.5, 0.95):
                lines.append(f'hand2world_latency_ms{{quantile="{q}"}} {float(np.quantile(latencies, q)):.2f}')
        return "\n".join(lines) + "\n"

    async def close_all(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        for session in list(self.sessions.values()):
            await self.release(session)


@dataclass
class AppContext:
    """What the routers share: settings, live sessions, scenes, the upload quota, the kiosk (or None)."""

    config: ServerConfig
    registry: Registry
    scenes: SceneStore
    quota: Any
    kiosk: Any = None
