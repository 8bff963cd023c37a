"""The live app over real transports on 127.0.0.1: aiortc WebRTC, WebSocket, HTTP; bad input; server-side tracking.

Every test starts the real app (uvicorn) on a free loopback port and talks to it with real
clients (aiortc, websockets, httpx). Hand messages are MediaPipe landmarks of the real cup video.
All traffic stays on 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import asyncio
import json

import cv2
import httpx
import numpy as np
import pytest
import websockets
from aiortc import VideoStreamTrack
from av import VideoFrame

from hand2world.server.app import create_app
from hand2world.server.clients import LocalServer, WebRTCClient, cup_hand_messages, wait_until
from hand2world.server.clients import WebSocketClient as WSClient
from hand2world.server.session import ServerConfig

CONFIG = ServerConfig(ice_hosts=("127.0.0.1",), stats_interval=0.25)


@pytest.fixture(scope="module")
def cup_messages(cup_video):
    return cup_hand_messages(45)


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def _send_until(send, msgs, done, timeout: float, rate: float = 30.0, t0: float = 0.0) -> bool:
    """Send hands messages at ``rate`` until ``done()`` (True) or ``timeout`` seconds (False): no speed assumed."""
    start, i = asyncio.get_running_loop().time(), 0
    while not done():
        if asyncio.get_running_loop().time() - start > timeout:
            return False
        await send(json.dumps({**msgs[i % len(msgs)], "t": t0 + i * 1000.0 / rate}))
        i += 1
        await asyncio.sleep(1.0 / rate)
    return True


def test_webrtc_client_gets_50_conditioned_frames(cup_messages):
    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            client = await WebRTCClient().connect(url, scene="coffee")
            assert client.session
            assert await _send_until(lambda m: _async(client.send, m), cup_messages,
                                     lambda: client.frames >= 50 and client.stats.get("hands_seen", 0) >= 50, 90)
            await wait_until(lambda: client.stats.get("frames_out", 0) >= 50, 5)
            stats = client.stats
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"{url}/healthz")).json()
            frame = client.last_frame
            await client.close()  # the client hangs up: its session is released

            async def live() -> int:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{url}/healthz")).json()["sessions"]
            released = False
            for _ in range(50):
                if await live() == 0:
                    released = True
                    break
                await asyncio.sleep(0.2)
            return client, stats, health, frame, released
    client, stats, health, frame, released = asyncio.run(run())
    assert released
    assert stats["mode"] == "preview" and stats["source"] == "preview" and stats["scene"] == "coffee"
    assert stats["hands_seen"] >= 50 and stats["frames_out"] >= 50 and stats["errors"] == 0
    assert stats["control_pixels"] > 500  # the control render shows the tracked hand
    assert stats["latency_ms"] is not None and stats["fps"] > 0  # reported (speed is the benchmarks' job)
    assert client.controls >= 2  # control-render previews on the data channel
    assert any(e["type"] == "started" and e["mode"] == "preview" for e in client.events)
    assert health["sessions"] == 1
    assert frame.shape == (240, 320, 3)
    # the right hand's control colour (orange fill, RGB 255,140,30) is composited into the frame
    orange = (frame[..., 0] > 170) & (frame[..., 1] > 70) & (frame[..., 1] < 190) & (frame[..., 2] < 110)
    assert orange.sum() > 200


async def _async(fn, *args):
    fn(*args)


def test_websocket_client_gets_50_jpeg_frames(cup_messages):
    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            async with websockets.connect(_ws_url(url), max_size=2**22) as ws:
                c = WSClient(ws)
                await ws.send(json.dumps({"type": "start", "scene": "astronaut"}))
                reader = asyncio.create_task(c.read())
                assert await _send_until(ws.send, cup_messages,
                                         lambda: c.frames >= 50 and c.stats.get("hands_seen", 0) >= 50, 90)
                await wait_until(lambda: c.stats.get("frames_out", 0) >= 50, 5)
                reader.cancel()
                return c
    c = asyncio.run(run())
    assert c.frames >= 50 and not c.errors
    assert c.events[0]["type"] == "started" and c.events[0]["mode"] == "preview"
    assert c.stats["hands_seen"] >= 50 and c.stats["control_pixels"] > 500 and c.stats["scene"] == "astronaut"
    img = cv2.imdecode(np.frombuffer(c.last_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)


def test_websocket_bad_input_gets_errors_and_others_are_unaffected(cup_messages):
    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            async with websockets.connect(_ws_url(url), max_size=2**22) as good_ws, \
                    websockets.connect(_ws_url(url), max_size=2**22) as bad_ws:
                good, bad = WSClient(good_ws), WSClient(bad_ws)
                await good_ws.send(json.dumps({"type": "start", "scene": "coffee"}))
                await bad_ws.send(json.dumps({"type": "start", "scene": "chelsea"}))
                readers = [asyncio.create_task(good.read()), asyncio.create_task(bad.read())]
                assert await _send_until(good_ws.send, cup_messages, lambda: good.frames >= 5, 60)
                before = good.frames
                good_sender = asyncio.create_task(_send_until(good_ws.send, cup_messages,
                                                              lambda: good.frames >= before + 15, 90, t0=1e5))
                hand = cup_messages[0]["hands"][0]
                abuse = [
                    "{oops",  # malformed JSON
                    json.dumps({"type": "hands", "hands": [{**hand, "image": "left"}]}),  # wrong type
                    json.dumps({"type": "hands", "hands": [{**hand, "world": hand["world"][:20]}]}),  # length
                    json.dumps({"type": "hands", "hands": [], "pad": "x" * (1 << 20)}),  # 1 MB message
                    json.dumps({"type": "jump"}),
                ]
                for raw in abuse:
                    await bad_ws.send(raw)
                await bad_ws.send(b"\x00\xff" * 10)  # binary garbage
                assert await wait_until(lambda: len(bad.errors) >= 6, 10), bad.errors
                burst = json.dumps({**cup_messages[1], "t": 99999.0})
                for _ in range(1000):  # a burst of 1,000 messages
                    await bad_ws.send(burst)
                # the abusive session survives and still streams
                n_bad = bad.frames
                assert await _send_until(bad_ws.send, cup_messages, lambda: bad.frames > n_bad + 3, 60, t0=200000.0)
                assert await wait_until(lambda: bad.stats["messages_in"] + bad.stats["messages_limited"] >= 1020, 10)
                await good_sender
                for r in readers:
                    r.cancel()
                return good, bad, before
    good, bad, before = asyncio.run(run())
    codes = [e["error"] for e in bad.errors]
    assert codes[:6] == ["bad_json", "bad_message", "bad_message", "too_large", "unknown_type", "bad_json"]
    assert "shape [21, 3]" in bad.errors[2]["detail"]
    # the burst was refused by the budget (unread) or coalesced by the inbox, never queued
    assert bad.stats["messages_dropped"] + bad.stats["messages_limited"] > 500
    assert bad.stats["queue_depth"] <= CONFIG.inbox_size
    # the other session streamed throughout (a loose bound: 2 shared cores run both sessions)
    assert not good.errors and good.frames - before >= 15


def test_websocket_start_protocol_and_session_limit():
    async def run():
        app = create_app(ServerConfig(ice_hosts=("127.0.0.1",), max_sessions=1))
        async with LocalServer(app) as url:
            out = {}
            async with websockets.connect(_ws_url(url)) as ws:  # hands before start: refused
                await ws.send(json.dumps({"type": "hands", "hands": []}))
                out["no_start"] = json.loads(await ws.recv())
                await ws.wait_closed()
                out["no_start_code"] = ws.close_code
            async with websockets.connect(_ws_url(url)) as ws:
                await ws.send(json.dumps({"type": "start", "scene": "mars"}))
                out["bad_scene"] = json.loads(await ws.recv())
            async with websockets.connect(_ws_url(url)) as first:
                await first.send(json.dumps({"type": "start", "scene": "coffee"}))
                assert json.loads(await first.recv())["type"] == "started"
                async with websockets.connect(_ws_url(url)) as second:
                    await second.send(json.dumps({"type": "start", "scene": "coffee"}))
                    out["busy"] = json.loads(await second.recv())
                    await second.wait_closed()
                    out["busy_code"] = second.close_code
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient() as http:
                out["health"] = (await http.get(f"{url}/healthz")).json()
                out["metrics"] = (await http.get(f"{url}/metrics")).text
            return out
    out = asyncio.run(run())
    assert out["no_start"]["error"] == "expected_start" and out["no_start_code"] == 1008
    assert out["bad_scene"]["error"] == "bad_scene" and "coffee" in out["bad_scene"]["detail"]
    assert out["busy"]["error"] == "busy" and out["busy_code"] == 1013
    assert out["health"]["sessions"] == 0  # every session was released
    metrics = dict(line.split(" ", 1) for line in out["metrics"].splitlines() if not line.startswith("#"))
    assert metrics["hand2world_sessions"] == "0" and metrics["hand2world_sessions_max"] == "1"
    assert metrics["hand2world_sessions_total"] == "2"  # "mars" got a session (refused at start); "busy" did not


def test_webrtc_bad_offers_and_data_channel_abuse(cup_messages):
    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            async with httpx.AsyncClient(timeout=20) as http:
                r_garbage = await http.post(f"{url}/offer", content=b"\x00not json")
                r_shape = await http.post(f"{url}/offer", json={"sdp": 5, "type": "offer"})
                r_sdp = await http.post(f"{url}/offer", json={"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"})
                r_huge = await http.post(f"{url}/offer", json={"sdp": "x" * 200_000, "type": "offer"})
                health0 = (await http.get(f"{url}/healthz")).json()
            client = await WebRTCClient().connect(url)
            client.send("{oops")
            client.send(json.dumps({"type": "hands", "hands": [{"side": "right", "image": [[0, 0]] * 21}]}))
            client.send(json.dumps({"type": "hands", "hands": [], "pad": "x" * 100_000}))
            for _ in range(1000):
                client.send(json.dumps({**cup_messages[2], "t": 5.0}))
            assert await wait_until(lambda: len(client.errors) >= 3, 10), client.errors
            assert await wait_until(lambda: client.stats.get("messages_in", 0)
                                    + client.stats.get("messages_limited", 0) >= 1000, 20)
            n = client.stats["frames_out"]
            # the session survived: new hand messages still give new frames
            assert await _send_until(lambda m: _async(client.send, m), cup_messages,
                                     lambda: client.stats["frames_out"] > n + 10, 60, t0=10000.0), client.stats
            stats = client.stats
            await client.close()
            return r_garbage, r_shape, r_sdp, r_huge, health0, client, stats
    r_garbage, r_shape, r_sdp, r_huge, health0, client, stats = asyncio.run(run())
    assert r_garbage.status_code == 400 and r_garbage.json()["error"] == "bad_json"
    assert r_shape.status_code == 400 and r_shape.json()["error"] == "bad_offer"
    assert r_sdp.status_code == 400 and r_sdp.json()["error"] == "bad_sdp" and "bad offer" in r_sdp.json()["detail"]
    assert r_huge.status_code == 413
    assert health0["sessions"] == 0  # refused offers leave no session behind
    assert [e["error"] for e in client.errors[:3]] == ["bad_json", "bad_message", "too_large"]
    assert stats["messages_dropped"] + stats["messages_limited"] > 500 and stats["queue_depth"] <= CONFIG.inbox_size


def test_upload_checks_and_use_as_scene(tmp_path, cup_messages):
    photo = cv2.imencode(".jpg", np.full((200, 300, 3), (40, 200, 40), np.uint8))[1].tobytes()

    async def run():
        app = create_app(CONFIG, upload_root=tmp_path / "up")
        async with LocalServer(app) as url:
            async with httpx.AsyncClient(timeout=20) as http:
                ok = await http.post(f"{url}/upload", content=photo, headers={"content-type": "image/jpeg"})
                token, scene = ok.json()["token"], ok.json()["scene"]
                listed = (await http.get(f"{url}/scenes", params={"token": token})).json()
                other = (await http.get(f"{url}/scenes")).json()
                text = await http.post(f"{url}/upload", content=b"hello", headers={"content-type": "text/plain"})
                fake = await http.post(f"{url}/upload", content=b"hello world", headers={"content-type": "image/png"})
                big = await http.post(f"{url}/upload", content=b"\xff\xd8\xff" + bytes(9 << 20),
                                      headers={"content-type": "image/jpeg"})
                traversal = await http.post(f"{url}/upload", params={"token": "../../etc"}, content=photo,
                                            headers={"content-type": "image/jpeg"})
            async with websockets.connect(_ws_url(url), max_size=2**22) as ws:  # someone else's upload
                await ws.send(json.dumps({"type": "start", "scene": scene}))
                stolen = json.loads(await ws.recv())
            async with websockets.connect(_ws_url(url), max_size=2**22) as ws:
                await ws.send(json.dumps({"type": "start", "scene": scene, "token": token}))
                started = json.loads(await ws.recv())
                await ws.send(json.dumps(cup_messages[0]))
                frame = None
                while frame is None:
                    m = await asyncio.wait_for(ws.recv(), 10)
                    frame = m if isinstance(m, bytes) else None
            return ok, token, scene, listed, other, text, fake, big, traversal, stolen, started, frame
    ok, token, scene, listed, other, text, fake, big, traversal, stolen, started, frame = asyncio.run(run())
    assert ok.status_code == 200 and scene.startswith("upload:")
    assert scene in [s["name"] for s in listed["scenes"]] and scene not in [s["name"] for s in other["scenes"]]
    assert text.status_code == 415 and fake.status_code == 415 and big.status_code == 413
    assert traversal.status_code == 400
    assert stolen["error"] == "bad_scene"
    assert started["type"] == "started" and started["scene"] == scene
    img = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert abs(int(img[200, 20, 1]) - 200) < 30 and img[200, 20, 0] < 80  # the uploaded green photo
    files = [p for p in (tmp_path / "up").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].parent == tmp_path / "up" / token


class CupVideoTrack(VideoStreamTrack):
    """Sends the real cup video's frames (looping) as a WebRTC video track."""

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__()
        self.frames, self.i = frames, 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self.frames[self.i % len(self.frames)], format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.i += 1
        return frame


def test_server_side_tracking_from_a_video_track(cup_video):
    from hand2world.io import read_video

    frames = read_video(cup_video, max_frames=60)

    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            client = await WebRTCClient().connect(url, send_video=CupVideoTrack(frames))
            ok = await wait_until(lambda: client.stats.get("hands_seen", 0) >= 10 and client.frames >= 10, 45)
            stats = client.stats
            await client.close()
            return ok, stats, client
    ok, stats, client = asyncio.run(run())
    assert ok, stats
    assert stats["hands_seen"] >= 10 and stats["control_pixels"] > 500 and client.frames >= 10


def test_headset_xrhands_over_websocket():
    """A headset-style client: 25-joint WebXR hands + head pose in a world frame -> conditioned frames."""
    import torch

    from hand2world.hands import HandModel, HandPose
    from hand2world.server.protocol import XR_TO_MEDIAPIPE

    def xr_joints_from(points21: np.ndarray) -> np.ndarray:  # finger metacarpals halfway wrist -> knuckle
        xr = np.zeros((25, 3))
        xr[list(XR_TO_MEDIAPIPE)] = points21
        for meta in (5, 10, 15, 20):
            xr[meta] = 0.5 * (points21[0] + xr[meta + 1])
        return xr

    model = HandModel.load("open", side="right")
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, -1.5, 0.0]  # a standing viewer; world y is down as in the OpenCV convention
    msgs = []
    for i in range(40):
        pose = HandPose.zeros(1)
        pose.transl[:] = torch.tensor([0.05 * np.sin(i / 6), 0.05, 0.45])
        with torch.no_grad():
            cam = model(pose).joints[0].numpy().astype(np.float64)
        world = cam @ c2w[:3, :3].T + c2w[:3, 3]
        msgs.append({"type": "xrhands", "t": i * 33.0, "head": {"c2w": c2w.reshape(-1).tolist()},
                     "hands": [{"side": "right", "joints": xr_joints_from(world).tolist()}]})

    async def run():
        async with LocalServer(create_app(CONFIG)) as url:
            async with websockets.connect(_ws_url(url), max_size=2**22) as ws:
                c = WSClient(ws)
                await ws.send(json.dumps({"type": "start", "scene": "rocket"}))
                reader = asyncio.create_task(c.read())
                await _send_until(ws.send, msgs, lambda: c.stats.get("hands_seen", 0) >= 10, 60)
                reader.cancel()
                return c
    c = asyncio.run(run())
    assert not c.errors, c.errors
    assert c.stats["hands_seen"] >= 10 and c.frames >= 10 and c.stats["control_pixels"] > 500


def test_unavailable_frame_source_is_a_clear_error():
    """A source that cannot load (the generator without weights) answers 500 / 1011 with the reason."""
    config = ServerConfig(ice_hosts=("127.0.0.1",), source="generator", weights="/nonexistent/weights")

    async def run():
        async with LocalServer(create_app(config)) as url:
            client = WebRTCClient()
            with pytest.raises(RuntimeError) as err:
                await client.connect(url)
            await client.close()
            async with websockets.connect(_ws_url(url)) as ws:
                await ws.send(json.dumps({"type": "start", "scene": "coffee"}))
                msg = json.loads(await ws.recv())
                await ws.wait_closed()
                code = ws.close_code
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"{url}/healthz")).json()
            return str(err.value), msg, code, health
    offer_error, msg, code, health = asyncio.run(run())
    assert "500" in offer_error and "server_error" in offer_error
    assert msg["error"] == "server_error" and msg["detail"] and code == 1011
    assert health["sessions"] == 0
