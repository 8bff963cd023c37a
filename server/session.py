"""One live session: validated messages in through a bounded queue, frames out through a latest-frame slot.

Transports (WebRTC data channel / video track, WebSocket) never touch the model side: they
``submit`` messages to the session's ``Inbox`` and read frames from its ``FrameSlot`` and events
(errors, ``started``) from its ``outbox``. One worker task per session drains the inbox in order
and runs the CPU work (smoothing -> fitting -> control render + Plücker rays -> frame source) in
a worker thread, one step at a time.

Design choices:
- Bounded everywhere. The inbox holds at most ``inbox_size`` messages; when full, the oldest
  ``hands`` message is dropped (a stale hand pose is worthless once a newer one is queued;
  ``start``/``scene``/``reset`` are never dropped for a newer hand pose), and the worker skips a
  queued hand pose when a newer one is queued right behind it, so latency stays about one step
  when clients send faster than the session can compute. The frame slot keeps
  only the newest frame: a frame that is replaced before a transport sends it is counted as
  dropped (late). The outbox drops events when a client stops reading.
- Timestamps: the pipeline needs monotonic time; a client ``t`` that goes backwards is nudged
  forward by 1 ms. A missing head pose keeps the last one (identity at the start).
- Latency = time from a ``hands`` message arriving at the server to the first frame
  conditioned on it leaving the server; transports call ``mark_sent``.
- A failing step (bad scene, fit error) is reported to the client as an ``error`` event; the
  session keeps running.
- Limits (``Endpoint``, shared with kiosk seats): a token-bucket message budget. A WebSocket
  waits for it before reading the next message (``paced``: TCP pushes back, so a flood costs the
  server no more than a client within budget); the data channel cannot push back, so there it is
  checked before a message is even parsed (``accept``: over-budget messages cost one counter increment and are
  answered together, by at most one ``rate_limited`` error a second with their count, so a flood
  cannot amplify itself; a client sending more than twice its budget for ``FLOOD_SECONDS`` in a
  row is ended with ``flooding``, so its receive cost stops too), and the
  time of the last valid message (``last_activity``) for the registry's idle timeout.
- Frames are computed on demand: the worker runs at most one step ahead of the newest frame a
  transport has taken (``FrameSlot.wait_taken``): a reader that keeps up never waits for it, and a
  client that stops reading costs no compute after two steps (the newest queued hand pose is what
  the next step uses once it reads again).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from hand2world.conditioning import ControlConfig, ControlPipeline
from hand2world.io import encode_jpeg
from hand2world.server.protocol import (
    HandsMessage,
    Message,
    PingMessage,
    ResetMessage,
    SceneMessage,
    XRHandsMessage,
    xr_to_tracked,
)
from hand2world.server.scenes import DEFAULT_SCENE, SceneError, SceneStore
from hand2world.server.sources import FrameSource, load_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Settings shared by all sessions of one server."""

    height: int = 240
    width: int = 320
    fov_deg: float = 60.0
    max_fps: float = 30.0  # video-track pacing ceiling
    source: str = "preview"  # "preview" (conditioning preview) or "generator" (the video model, later)
    weights: str | None = None
    device: str = "cpu"
    max_sessions: int = 4
    inbox_size: int = 8
    stats_interval: float = 0.5  # seconds between stats messages
    control_preview_hz: float = 4.0  # control-render JPEGs per second on the data channel (0 = off)
    kiosk: bool = False
    kiosk_idle_s: float = 20.0  # kiosk: the active visitor hands over after this long without hands ...
    kiosk_turn_s: float = 120.0  # ... or after this long in all, when someone is waiting
    kiosk_attract_s: float = 10.0  # kiosk: the attract loop plays after this long with nobody's hands
    idle_timeout_s: float = 15.0  # no valid message for this long ends a session (its slot frees)
    message_rate: float = 120.0  # per-session message budget: sustained messages per second ...
    message_burst: int = 240  # ... and burst size (token bucket)
    allow_origins: tuple[str, ...] = ()  # Origins allowed besides the server's own (headset / app pages)
    token: str | None = None  # access token required on /offer, /ws, /upload, /scenes when set
    upload_per_client: int = 8  # uploads per client address per upload_window_s
    upload_window_s: float = 600.0
    upload_disk_mb: float = 64.0  # all uploads together; the oldest are evicted beyond it
    upload_concurrency: int = 2  # uploads read and decoded at once; more get 503
    ice_hosts: tuple[str, ...] | None = None  # limit ICE host candidates (e.g. ("127.0.0.1",))
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs for the server's peer connections (none: host candidates)
    ice_username: str | None = None  # TURN username / credential (long-term credentials, for turn(s): URLs)
    ice_credential: str | None = None


FLOOD_SECONDS = 3  # seconds in a row of more than twice the budget that end a session ("flooding")


class Budget:
    """Token bucket: ``rate`` messages per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self._tokens, self._t = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Endpoint:
    """What a transport talks to: an id, an event outbox, a message budget, activity, owned tasks.

    ``Session`` (one client, one pipeline) and the kiosk's ``KioskSeat`` (a visitor watching the
    shared screen) are both endpoints; transports use only this interface plus ``frames``,
    ``submit``, ``stats``, ``mark_sent`` and ``control_jpeg``.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.config = config
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1024)
        self.budget = Budget(config.message_rate, config.message_burst)
        self.last_activity = time.monotonic()
        self.limited = 0  # messages refused by the budget
        self._limited_reported = 0
        self._limited_at = time.monotonic()
        self._flood_run = 0
        self.errors = 0
        self.tasks: list[asyncio.Task] = []  # transport tasks tied to this endpoint, cancelled on close
        self.closed = False
        self.ended = asyncio.Event()
        self.end_reason: str | None = None

    def accept(self) -> bool:
        """Whether the next message fits the budget (call before parsing it).

        Refused messages are answered by ``rate_limited`` errors carrying their ``count``, at most one
        a second (the last ones flushed by ``stats``, which the transports call twice a second), so
        the counts add up to every message refused and a flood cannot amplify itself.
        """
        if self.budget.take():
            return True
        self.limited += 1
        if time.monotonic() - self._limited_at >= 1.0:
            self._report_limited()
        return False

    async def paced(self) -> None:
        """Wait until the budget has room for one more message, and take it (for transports that can
        push back: a WebSocket stops reading, so a flood waits in the client's own buffers)."""
        while not self.budget.take():
            await asyncio.sleep(max(0.002, 1.0 / self.config.message_rate))

    def flush_limited(self) -> None:
        """Report refused messages not reported yet, once a second has passed since the last report."""
        if self.limited > self._limited_reported and time.monotonic() - self._limited_at >= 1.0:
            self._report_limited()

    def _flood_check(self, refused: int, seconds: float) -> None:
        """A client refused more than its whole budget each second for ``FLOOD_SECONDS`` in a row is ended."""
        self._flood_run = self._flood_run + 1 if refused > self.config.message_rate * seconds else 0
        if self._flood_run >= FLOOD_SECONDS:
            log.info("endpoint %s: over twice its message budget for %d s, closing", self.id, FLOOD_SECONDS)
            self.end("flooding")

    def _report_limited(self) -> None:
        now = time.monotonic()
        n, self._limited_reported = self.limited - self._limited_reported, self.limited
        self._flood_check(n, now - self._limited_at)
        self._limited_at = now
        self.errors += 1
        self.emit({"type": "error", "error": "rate_limited", "count": n,
                   "detail": f"{n} message(s) over the budget of {self.config.message_rate:g}/s "
                             f"(burst {self.config.message_burst}) were dropped unread"})

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def emit(self, event: dict[str, Any]) -> None:
        """Queue an event for the client (dropped when the client does not read)."""
        try:
            self.outbox.put_nowait(event)
        except asyncio.QueueFull:
            pass

    def report(self, err: Exception) -> None:
        """Send a refused message's error back (``ProtocolError``, ``SceneError``)."""
        self.errors += 1
        code = getattr(err, "code", None) or "bad_scene"
        self.emit({"type": "error", "error": code, "detail": str(err)})

    def end(self, reason: str) -> None:
        """Ask the transport to hang up (idle timeout, kiosk policy); ``Registry.release`` does the rest."""
        if self.end_reason is None:
            self.end_reason = reason
        self.ended.set()

    async def close(self) -> None:
        self.closed = True
        self.ended.set()
        current = asyncio.current_task()
        tasks = [t for t in self._own_tasks() if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing; errors were logged
                pass

    def _own_tasks(self) -> list[asyncio.Task | None]:
        return list(self.tasks)


class Inbox:
    """Bounded message queue; when full, the oldest ``hands`` message makes room."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Message] = collections.deque()
        self._event = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Message) -> None:
        if len(self._items) >= self.maxsize:
            victim = next((m for m in self._items if isinstance(m, HandsMessage)), None)
            if victim is None and isinstance(msg, HandsMessage):
                self.dropped += 1  # only control messages queued: drop the new hand pose instead
                return
            self._items.remove(victim if victim is not None else self._items[0])
            self.dropped += 1
        self._items.append(msg)
        self._event.set()

    async def get(self) -> Message:
        """The next message; a ``hands`` message directly followed by a newer one is skipped (stale)."""
        while not self._items:
            self._event.clear()
            await self._event.wait()
        msg = self._items.popleft()
        while isinstance(msg, HandsMessage) and self._items and isinstance(self._items[0], HandsMessage):
            msg = self._items.popleft()
            self.dropped += 1
        return msg


def stamp_frame(rgb: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``rgb`` with ``text`` in white on a dark band along the bottom edge."""
    out = rgb.copy()
    h, w = out.shape[:2]
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    scale = min(0.9 * w / tw, 0.12 * h / th)
    band = int(th * scale) + 10
    out[h - band:] = (out[h - band:] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (5, h - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(scale * 2)),
                cv2.LINE_AA)
    return out


@dataclass
class Frame:
    """A produced frame: uint8 RGB [H, W, 3] plus the arrival time of the message it is conditioned on."""

    rgb: np.ndarray
    received: float
    index: int
    hands: int


class FrameSlot:
    """Latest-frame holder: ``put`` replaces, ``wait`` returns the next frame newer than the caller's."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._cond = asyncio.Condition()
        self._taken = True
        self.taken_index = 0
        self.dropped = 0

    @property
    def latest(self) -> Frame | None:
        return self._frame

    async def put(self, frame: Frame) -> None:
        async with self._cond:
            if not self._taken:
                self.dropped += 1
            self._frame, self._taken = frame, False
            self._cond.notify_all()

    async def wait_taken(self, ahead: int = 1) -> None:
        """Return once at most ``ahead`` produced frames are newer than the last one a reader took."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._frame is None or self._frame.index - self.taken_index <= ahead)

    async def wait(self, after: int, timeout: float) -> Frame | None:
        """The newest frame with ``index > after``, or None after ``timeout`` seconds."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self._frame is not None and
                                                           self._frame.index > after), timeout)
            except TimeoutError:
                return None
            self._taken = True
            self.taken_index = self._frame.index
            self._cond.notify_all()
            return self._frame


@dataclass
class _Stats:
    messages_in: int = 0
    hands_seen: int = 0
    frames_out: int = 0
    control_pixels: int = 0
    sent_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))
    all_latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))


class Session(Endpoint):
    """A live stream: owns the conditioning pipeline and the frame source of one client.

    Use ``await start()``, then ``submit(message)``; read frames with ``frames.wait(...)`` and
    events from ``outbox``; ``await close()`` at the end.
    """

    def __init__(self, config: ServerConfig, scenes: SceneStore, token: str | None = None,
                 source: FrameSource | None = None) -> None:
        super().__init__(config)
        self.scenes = scenes
        self.token = token
        self.inbox = Inbox(config.inbox_size)
        self.frames = FrameSlot()
        self.pipeline = ControlPipeline(ControlConfig(height=config.height, width=config.width,
                                                      fov_deg=config.fov_deg))
        self.source = source if source is not None else load_source(
            config.source, config.height, config.width, config.fov_deg, config.weights, config.device)
        self.scene_name: str | None = None
        self.stats_ = _Stats()
        self._last_t = -1.0
        self._c2w = np.eye(4, dtype=np.float32)
        self._control: np.ndarray | None = None
        self._index = 0
        self._task: asyncio.Task | None = None

    # ---- lifecycle ----
    async def start(self, scene: str = DEFAULT_SCENE, token: str | None = None) -> None:
        """Load the scene (raises ``SceneError``), start the source and the worker."""
        await self._set_scene(scene, token if token is not None else self.token)
        self._task = asyncio.create_task(self._run(), name=f"session-{self.id}")
        self.emit({"type": "started", "session": self.id, "scene": self.scene_name, "mode": self.source.mode,
                   "source": self.source.name, "width": self.config.width, "height": self.config.height})

    def _own_tasks(self) -> list[asyncio.Task | None]:
        return [self._task, *self.tasks]

    # ---- transport side ----
    def submit(self, msg: Message) -> None:
        """Queue a validated message (never blocks; may drop an older hand pose).

        ``xrhands`` become ``hands`` here: 25 -> 21 joints projected into the session's camera.
        """
        if isinstance(msg, XRHandsMessage):
            c = self.config
            hands = [xr_to_tracked(j, side, msg.c2w, self.pipeline.K, c.height, c.width) for side, j in msg.hands]
            msg = HandsMessage(msg.t, [h for h in hands if h is not None], msg.c2w.astype(np.float32))
        if isinstance(msg, HandsMessage):
            msg.received = time.perf_counter()
        self.stats_.messages_in += 1
        self.touch()
        if not isinstance(msg, PingMessage):
            self.inbox.put(msg)

    def mark_sent(self, frame: Frame) -> None:
        now = time.perf_counter()
        s = self.stats_
        s.frames_out += 1
        s.sent_times.append(now)
        ms = (now - frame.received) * 1000.0
        s.latencies.append((now, ms))
        s.all_latencies.append(ms)

    def stats(self) -> dict[str, Any]:
        self.flush_limited()
        s, now = self.stats_, time.perf_counter()
        recent = [t for t in s.sent_times if now - t < 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 and recent[-1] > recent[0] else 0.0
        lat = [ms for t, ms in s.latencies if now - t < 2.0]
        return {"type": "stats", "session": self.id, "mode": self.source.mode, "source": self.source.name,
                "scene": self.scene_name, "fps": round(fps, 2),
                "latency_ms": round(float(np.median(lat)), 1) if lat else None,
                "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
                "queue_depth": len(self.inbox), "messages_in": s.messages_in,
                "messages_dropped": self.inbox.dropped, "hands_seen": s.hands_seen, "frames_out": s.frames_out,
                "frames_dropped": self.frames.dropped, "control_pixels": s.control_pixels, "errors": self.errors,
                "messages_limited": self.limited}

    def latencies(self) -> list[float]:
        """All message-to-frame latencies (ms) of this session so far."""
        return list(self.stats_.all_latencies)

    def control_jpeg(self, width: int = 160, quality: int = 70) -> bytes | None:
        """The last control render as a small JPEG (for the client's control preview)."""
        if self._control is None:
            return None
        h = max(2, round(self._control.shape[0] * width / self._control.shape[1]))
        small = cv2.resize(self._control, (width, h), interpolation=cv2.INTER_AREA)
        return encode_jpeg(small, quality)

    # ---- worker side ----
    async def _set_scene(self, name: str, token: str | None) -> None:
        scene = await asyncio.to_thread(self.scenes.load, name, token)
        await asyncio.to_thread(self.source.start, scene, self.pipeline.K)
        self.pipeline.reset()
        self.scene_name = name
        log.info("session %s: scene %s", self.id, name)

    def _step(self, msg: HandsMessage) -> tuple[np.ndarray, np.ndarray]:
        t = msg.t if msg.t > self._last_t else self._last_t + 1e-3
        self._last_t = t
        if msg.c2w is not None:
            self._c2w = msg.c2w
        cf = self.pipeline.process(msg.hands, t)
        frames = self.source.step(cf.control[None], self._c2w[None].astype(np.float32))
        rgb = frames[0]
        if msg.label:
            rgb = stamp_frame(rgb, msg.label)
        return rgb, cf.control

    async def _run(self) -> None:
        while True:
            await self.frames.wait_taken()  # nobody takes the frames: computing more is wasted
            msg = await self.inbox.get()
            try:
                if isinstance(msg, SceneMessage):
                    await self._set_scene(msg.scene, msg.token if msg.token is not None else self.token)
                    self.emit({"type": "started", "session": self.id, "scene": self.scene_name,
                               "mode": self.source.mode, "source": self.source.name})
                elif isinstance(msg, ResetMessage):
                    self.pipeline.reset()
                    self.source.reset()
                    self._last_t, self._c2w = -1.0, np.eye(4, dtype=np.float32)
                elif isinstance(msg, HandsMessage):
                    rgb, control = await asyncio.to_thread(self._step, msg)
                    self._control = control
                    self.stats_.control_pixels = int(control.any(axis=2).sum())
                    if msg.hands:
                        self.stats_.hands_seen += 1
                    self._index += 1
                    await self.frames.put(Frame(rgb, msg.received, self._index, len(msg.hands)))
            except SceneError as exc:
                self.report(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad step must not end the session
                log.exception("session %s: step failed", self.id)
                self.errors += 1
                self.emit({"type": "error", "error": "step_failed", "detail": f"{type(exc).__name__}: {exc}"})
