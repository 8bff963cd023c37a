"""Kiosk mode (``serve --kiosk``): one shared screen, one visitor at a time drives it, the rest queue and watch.

The kiosk owns one ``Session`` (the *screen*: pipeline + frame source). Every visitor that
connects (WebRTC offer or WebSocket ``start``) gets a ``KioskSeat``, a cheap ``Endpoint`` whose
video is the screen's frames. Seats form a queue; the first is the *active* one:

- Only the active seat's ``hands`` / ``xrhands`` / ``scene`` / ``reset`` reach the screen. A queued
  seat's are refused with ``not_your_turn`` (its place in the queue in the detail), so a second
  client can neither take over nor disturb the active one; ``ping`` keeps any seat alive.
- Handover: the active seat goes to the back of the queue after ``kiosk_idle_s`` without hands,
  or after ``kiosk_turn_s`` in all, when someone is waiting. A new turn starts from a reset
  screen (smoothing, warm starts, camera and the generator's history forgotten).
- Attract loop: after ``kiosk_attract_s`` without anybody's hands (no visitor, or one who does
  nothing), the screen plays a recorded gesture (``attract_gesture.json``: MediaPipe landmarks of
  the real cup video) and every frame made from it is stamped ``ATTRACT LOOP``; the first real hand
  of the active visitor stops it (with a reset). HandWorld's autoplay replaces the recording once
  it exists.
- Every seat gets ``{"type": "kiosk", "role": "active"|"queued", "position", "queue", "attract",
  "turn_left_s", "idle_left_s"}`` on every change and once a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hand2world.server.protocol import (
    HandsMessage,
    Message,
    PingMessage,
    ProtocolError,
    ResetMessage,
    XRHandsMessage,
    parse_message,
)
from hand2world.server.scenes import DEFAULT_SCENE, SceneStore
from hand2world.server.session import Endpoint, Frame, ServerConfig, Session

log = logging.getLogger(__name__)

GESTURE_PATH = Path(__file__).with_name("attract_gesture.json")
ATTRACT_LABEL = "ATTRACT LOOP - recorded gesture"
TICK_S = 0.05


def load_gesture(path: Path = GESTURE_PATH) -> tuple[list[HandsMessage], float]:
    """The recorded gesture as validated ``hands`` messages, played forward then backward; and its fps."""
    doc = json.loads(path.read_text())
    msgs = [parse_message(json.dumps(m)) for m in doc["messages"]]
    msgs = [m for m in msgs if isinstance(m, HandsMessage)]
    if not msgs:
        raise ValueError(f"{path} holds no hands messages")
    return msgs + msgs[-2:0:-1], float(doc.get("fps", 15))


class KioskSeat(Endpoint):
    """One visitor of the kiosk: watches the screen's frames; drives it only while active."""

    def __init__(self, kiosk: Kiosk) -> None:
        super().__init__(kiosk.config)
        self.kiosk = kiosk
        self.frames = kiosk.screen.frames
        self.last_hands = time.monotonic()
        self.messages_in = self.hands_seen = self.frames_out = 0
        self._sent: list[float] = []

    async def start(self, scene: str = DEFAULT_SCENE, token: str | None = None) -> None:
        """Join the queue (the scene is the screen's; the active visitor may switch it with ``scene``)."""
        screen = self.kiosk.screen
        self.emit({"type": "started", "session": self.id, "scene": screen.scene_name, "mode": screen.source.mode,
                   "source": screen.source.name, "width": self.config.width, "height": self.config.height,
                   "kiosk": True})
        self.kiosk.join(self)

    def submit(self, msg: Message) -> None:
        self.messages_in += 1
        self.touch()
        if isinstance(msg, PingMessage):
            return
        self.kiosk.drive(self, msg)

    def mark_sent(self, frame: Frame) -> None:
        now = time.perf_counter()
        self.frames_out += 1
        self._sent = [t for t in self._sent[-200:] if now - t < 2.0] + [now]
        if self.kiosk.active is self:
            self.kiosk.screen.mark_sent(frame)

    def stats(self) -> dict[str, Any]:
        self.flush_limited()
        out = self.kiosk.screen.stats()
        recent = self._sent
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] else 0.0
        out.update({"session": self.id, "fps": round(fps, 2), "messages_in": self.messages_in,
                    "hands_seen": self.hands_seen, "frames_out": self.frames_out, "messages_dropped": 0,
                    "frames_dropped": 0, "errors": self.errors, "messages_limited": self.limited,
                    "kiosk": self.kiosk.state_for(self)})
        return out

    def latencies(self) -> list[float]:
        return []

    def control_jpeg(self, width: int = 160, quality: int = 70) -> bytes | None:
        return self.kiosk.screen.control_jpeg(width, quality)

    async def close(self) -> None:
        self.kiosk.leave(self)
        await super().close()


class Kiosk:
    """The shared screen, the queue of seats, handover and the attract loop."""

    def __init__(self, config: ServerConfig, scenes: SceneStore) -> None:
        self.config, self.scenes = config, scenes
        self.screen: Session | None = None
        self.active: KioskSeat | None = None
        self.queue: list[KioskSeat] = []
        self.turn_started = self.last_hands = time.monotonic()
        self.attract = False
        self.handovers = 0
        self.gesture, self.gesture_fps = load_gesture()
        self._g = 0
        self._t_ms = 0.0
        self._next_gesture = 0.0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Build and start the screen (in a thread: a generator loads weights) and the policy loop."""
        self.screen = await asyncio.to_thread(Session, self.config, self.scenes)
        await self.screen.start(DEFAULT_SCENE)
        self.last_hands = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="kiosk")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.screen is not None:
            await self.screen.close()

    def seat(self) -> KioskSeat:
        if self.screen is None:
            raise RuntimeError("the kiosk screen is not running yet")
        return KioskSeat(self)

    # ---- queue ----
    def join(self, seat: KioskSeat) -> None:
        if seat is not self.active and seat not in self.queue:
            self.queue.append(seat)
        self._promote()
        self.broadcast()

    def leave(self, seat: KioskSeat) -> None:
        if seat is self.active:
            self.active = None
            log.info("kiosk: active visitor %s left", seat.id)
        elif seat in self.queue:
            self.queue.remove(seat)
        self._promote()
        self.broadcast()

    def _promote(self) -> None:
        if self.active is None and self.queue:
            self.active = self.queue.pop(0)
            now = time.monotonic()
            self.turn_started = self.active.last_hands = now
            if self.screen is not None and not self.attract:
                self.screen.submit(ResetMessage())
            log.info("kiosk: %s drives the screen (%d waiting)", self.active.id, len(self.queue))

    def _handover(self, why: str) -> None:
        old = self.active
        assert old is not None
        self.active = None
        self.queue.append(old)
        self.handovers += 1
        log.info("kiosk: %s hands over (%s)", old.id, why)
        self._promote()
        self.broadcast()

    def position(self, seat: KioskSeat) -> int:
        """0 for the active seat, k for the k-th in the queue."""
        if seat is self.active:
            return 0
        return self.queue.index(seat) + 1 if seat in self.queue else -1

    def state_for(self, seat: KioskSeat) -> dict[str, Any]:
        now, c = time.monotonic(), self.config
        active = seat is self.active
        state: dict[str, Any] = {"role": "active" if active else "queued", "position": self.position(seat),
                                 "queue": len(self.queue), "attract": self.attract}
        if active:
            state["idle_left_s"] = round(max(0.0, c.kiosk_idle_s - (now - seat.last_hands)), 1)
            state["turn_left_s"] = round(max(0.0, c.kiosk_turn_s - (now - self.turn_started)), 1)
        return state

    def broadcast(self) -> None:
        for seat in [*([self.active] if self.active else []), *self.queue]:
            seat.emit({"type": "kiosk", **self.state_for(seat)})

    # ---- driving ----
    def drive(self, seat: KioskSeat, msg: Message) -> None:
        """A message of ``seat``: forwarded to the screen when it is the active one, refused otherwise."""
        assert self.screen is not None
        if seat is not self.active:
            raise ProtocolError(f"not your turn: you are number {self.position(seat)} in the kiosk queue; "
                                "watch until it is your turn", "not_your_turn")
        if isinstance(msg, HandsMessage | XRHandsMessage):
            if msg.hands:
                now = time.monotonic()
                seat.last_hands = self.last_hands = now
                seat.hands_seen += 1
                if self.attract:
                    self._stop_attract()
            elif self.attract:
                return  # nobody's hands: the attract loop keeps the screen
        self.screen.submit(msg)

    def _start_attract(self) -> None:
        assert self.screen is not None
        self.attract, self._g, self._next_gesture = True, 0, 0.0
        self.screen.submit(ResetMessage())
        log.info("kiosk: attract loop")
        self.broadcast()

    def _stop_attract(self) -> None:
        assert self.screen is not None
        self.attract = False
        self.screen.submit(ResetMessage())
        self.broadcast()

    def _feed_gesture(self, now: float) -> None:
        assert self.screen is not None
        if now < self._next_gesture:
            return
        self._next_gesture = now + 1.0 / self.gesture_fps
        msg = self.gesture[self._g % len(self.gesture)]
        self._g += 1
        self._t_ms += 1000.0 / self.gesture_fps
        self.screen.submit(replace(msg, t=self._t_ms / 1000.0, label=ATTRACT_LABEL))

    async def _run(self) -> None:
        c = self.config
        next_broadcast = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            a = self.active
            if a is not None and self.queue:
                if now - a.last_hands > c.kiosk_idle_s:
                    self._handover(f"no hands for {c.kiosk_idle_s:g} s")
                elif now - self.turn_started > c.kiosk_turn_s:
                    self._handover(f"turn of {c.kiosk_turn_s:g} s over")
            if not self.attract and now - self.last_hands > c.kiosk_attract_s:
                self._start_attract()
            if self.attract:
                self._feed_gesture(now)
            if now >= next_broadcast:
                self.broadcast()
                next_broadcast = now + 1.0
