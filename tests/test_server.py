"""Server parts without a network: wire-message validation, scenes and uploads, the preview source, the inbox."""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
import pytest

from hand2world.server.protocol import (
    MAX_MESSAGE_BYTES,
    HandsMessage,
    PingMessage,
    ProtocolError,
    ResetMessage,
    SceneMessage,
    hands_message,
    json_depth,
    parse_message,
)
from hand2world.server.scenes import BUILTIN_SCENES, SceneError, SceneStore
from hand2world.server.session import Inbox
from hand2world.server.sources import FrameSource, PreviewSource, fit_cover
from hand2world.tracking import TrackedHand


def _hand(side: str = "right") -> TrackedHand:
    rng = np.random.default_rng(0)
    image = np.column_stack([rng.uniform(0.3, 0.7, 21), rng.uniform(0.3, 0.7, 21), rng.normal(0, 0.02, 21)])
    return TrackedHand(side, 0.9, image, rng.normal(0, 0.04, (21, 3)))


def _png(h: int = 64, w: int = 96) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (0, 0, 255)
    return cv2.imencode(".png", img)[1].tobytes()


# ---- protocol ----
def test_hands_message_round_trip():
    c2w = np.eye(4)
    c2w[:3, 3] = [0.1, -0.2, 0.3]
    msg = parse_message(json.dumps(hands_message([_hand("left"), _hand("right")], 1500.0, c2w)))
    assert isinstance(msg, HandsMessage)
    assert msg.t == pytest.approx(1.5)
    assert [h.side for h in msg.hands] == ["left", "right"]
    np.testing.assert_allclose(msg.hands[0].image, _hand().image, atol=1e-5)
    np.testing.assert_allclose(msg.c2w, c2w, atol=1e-6)
    assert isinstance(parse_message('{"type": "reset"}'), ResetMessage)
    scene = parse_message('{"type": "start", "scene": "coffee"}')
    assert isinstance(scene, SceneMessage) and scene.scene == "coffee" and scene.token is None


@pytest.mark.parametrize("raw, code, words", [
    ("{not json", "bad_json", "not valid JSON"),
    ("[1, 2]", "bad_message", "JSON object"),
    ('{"type": "teleport"}', "unknown_type", "unknown message type"),
    ('{"type": "hands", "hands": "many"}', "bad_message", "must be a list"),
    ('{"type": "hands", "hands": [], "t": "soon"}', "bad_message", "hands.t"),
    ('{"type": "hands", "hands": [{"side": "middle"}]}', "bad_message", "side must be one of"),
    ('{"type": "start", "scene": 5}', "bad_message", "scene must be"),
    ('{"type": "hands", "hands": [], "head": {"c2w": [1, 2, 3]}}', "bad_message", "shape [16]"),
])
def test_malformed_messages_get_clear_errors(raw, code, words):
    with pytest.raises(ProtocolError) as err:
        parse_message(raw)
    assert err.value.code == code and words in str(err.value)
    assert err.value.to_dict()["type"] == "error"


def test_wrong_landmark_types_lengths_and_values():
    good = hands_message([_hand()], 0.0)
    cases = {
        "20 landmarks": lambda m: m["hands"][0].__setitem__("image", m["hands"][0]["image"][:20]),
        "strings": lambda m: m["hands"][0].__setitem__("world", [["a", "b", "c"]] * 21),
        "2-vectors": lambda m: m["hands"][0].__setitem__("world", [[0.0, 0.0]] * 21),
        "three hands": lambda m: m.__setitem__("hands", m["hands"] * 3),
        "far away": lambda m: m["hands"][0].__setitem__("world", [[50.0, 0.0, 0.0]] * 21),
        "bool score": lambda m: m["hands"][0].__setitem__("score", True),
    }
    for name, mutate in cases.items():
        msg = json.loads(json.dumps(good))
        mutate(msg)
        with pytest.raises(ProtocolError):
            parse_message(json.dumps(msg))
            pytest.fail(name)
    nan = json.dumps(good).replace(str(good["hands"][0]["world"][0][0]), "NaN", 1)
    with pytest.raises(ProtocolError, match="finite"):
        parse_message(nan)
    skew = hands_message([], 0.0, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ProtocolError, match="rigid"):
        parse_message(json.dumps(skew))


def test_huge_message_rejected_before_parsing():
    raw = '{"type": "hands", "hands": [], "pad": "' + "x" * (1 << 20) + '"}'
    with pytest.raises(ProtocolError) as err:
        parse_message(raw)
    assert err.value.code == "too_large" and str(MAX_MESSAGE_BYTES) in str(err.value)


# ---- scenes ----
def test_builtin_scenes_are_real_photos():
    store = SceneStore()
    try:
        for name in BUILTIN_SCENES:
            img = store.load(name)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.std() > 20
        with pytest.raises(SceneError) as err:
            store.load("../../etc/passwd")
        assert err.value.status == 404
    finally:
        store.close()


def test_uploads_are_checked_and_kept_per_token(tmp_path):
    store = SceneStore(tmp_path / "uploads")
    token, name, (h, w) = store.save_upload(_png(), None)
    assert (h, w) == (64, 96) and name.startswith("upload:")
    img = store.load(name, token)
    assert img.shape == (64, 96, 3) and tuple(img[0, 0]) == (255, 0, 0)  # stored as RGB correctly
    assert name in [s["name"] for s in store.list(token)]
    other = store.new_token()
    assert name not in [s["name"] for s in store.list(other)]
    with pytest.raises(SceneError) as err:
        store.load(name, other)
    assert err.value.status == 404
    with pytest.raises(SceneError) as err:
        store.load(name, None)
    assert err.value.status == 403
    # everything written lies in the token's folder, under a server-made name
    files = [p for p in (tmp_path / "uploads").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].parent.name == token and files[0].suffix == ".png"
    assert files[0].parent.parent == (tmp_path / "uploads").resolve()

    for data, status in [(b"GIF89a" + b"\0" * 100, 415), (b"%PDF-1.4 hello", 415), (b"", 400),
                         (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415), (b"\xff\xd8\xff" + b"\0" * (9 << 20), 413)]:
        with pytest.raises(SceneError) as err:
            store.save_upload(data, token)
        assert err.value.status == status
    with pytest.raises(SceneError, match="bad token"):
        store.save_upload(_png(), "../../tmp")
    for _ in range(7):
        store.save_upload(_png(), token)
    with pytest.raises(SceneError, match="per token") as err:  # 8 per token
        store.save_upload(_png(), token)
    assert err.value.status == 429
    store.max_total = 8
    oldest = sorted((p.stat().st_mtime_ns, p) for p in (tmp_path / "uploads").rglob("*.png"))[0][1]
    other_token, newest, _ = store.save_upload(_png(), None)  # a full store evicts its oldest upload ...
    assert store.usage()[0] == 8 and not oldest.exists() and store.evicted == 1
    assert newest in [s["name"] for s in store.list(other_token)]  # ... and later users are never locked out


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # a tiny PNG whose header claims 20000 x 20000 pixels
    big = np.zeros((20000, 20000), np.uint8)
    data = cv2.imencode(".png", big, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    del big
    assert len(data) < 2_000_000
    store = SceneStore(tmp_path)
    with pytest.raises(SceneError) as err:
        store.save_upload(data, None)
    assert err.value.status == 413 and "too large" in str(err.value)


# ---- preview source ----
def test_preview_source_composites_the_control_render():
    src = PreviewSource(120, 160, inset=0.0, label=False)
    assert isinstance(src, FrameSource) and src.mode == "preview"
    scene = SceneStore().load("coffee")
    src.start(scene)
    control = np.zeros((2, 120, 160, 3), np.uint8)
    control[1, 40:80, 60:100] = (255, 140, 30)
    c2w = np.stack([np.eye(4)] * 2)
    out = src.step(control, c2w)
    assert out.shape == (2, 120, 160, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], fit_cover(scene, 120, 160))  # no hand: the scene as is
    assert not np.array_equal(out[1, 40:80, 60:100], out[0, 40:80, 60:100])
    np.testing.assert_array_equal(out[1, :40], out[0, :40])  # only hand pixels change
    assert np.abs(out[1, 60, 80].astype(int) - (255, 140, 30)).max() < 60

    yaw = np.eye(4)
    yaw[:3, :3] = cv2.Rodrigues(np.array([0.0, 0.2, 0.0]))[0]
    turned = src.step(control[:1], yaw[None])[0]
    assert np.abs(turned.astype(int) - out[0]).mean() > 10  # the view pans when the head turns
    with pytest.raises(ValueError):
        src.step(control[:, :100], c2w)
    with pytest.raises(ValueError):
        src.step(control, c2w[:1])


def test_preview_frames_are_labelled():
    src = PreviewSource(120, 160).start(np.full((50, 50, 3), 128, np.uint8))
    out = src.step(np.zeros((1, 120, 160, 3), np.uint8), np.eye(4)[None])[0]
    white = (out >= 200).all(axis=2)  # (anti-aliased glyphs: OpenCV 5 leaves fewer pixels at full white)
    assert white[:30].sum() > 40 and white[40:].sum() == 0  # white "PREVIEW" text at the top only


# ---- inbox ----
def test_inbox_bounded_and_keeps_control_messages():
    async def run():
        inbox = Inbox(8)
        inbox.put(SceneMessage("scene", "chelsea", None))
        for i in range(1000):
            inbox.put(HandsMessage(float(i), [], None))
        inbox.put(ResetMessage())
        assert len(inbox) == 8 and inbox.dropped == 1000 - 6
        first = await inbox.get()
        assert isinstance(first, SceneMessage)
        newest = await inbox.get()  # stale queued hand poses are skipped
        assert isinstance(newest, HandsMessage) and newest.t == 999.0
        assert isinstance(await inbox.get(), ResetMessage)
    asyncio.run(run())


# ---- WebXR hands ----
def xr_joints_from(points21: np.ndarray) -> np.ndarray:
    """25 WebXR joints from 21 MediaPipe-order points (finger metacarpals halfway wrist -> knuckle)."""
    from hand2world.server.protocol import XR_TO_MEDIAPIPE

    xr = np.zeros((25, 3))
    xr[list(XR_TO_MEDIAPIPE)] = points21
    for meta in (5, 10, 15, 20):
        xr[meta] = 0.5 * (points21[0] + xr[meta + 1])
    return xr


def test_xr_hands_map_25_to_21_and_project_into_the_camera():
    import torch

    from hand2world.geometry import intrinsics_from_fov, project
    from hand2world.hands import HandModel, HandPose
    from hand2world.server.protocol import XRHandsMessage, xr_to_tracked

    pose = HandPose.zeros(1)
    pose.transl[:] = torch.tensor([0.05, 0.02, 0.45])
    with torch.no_grad():
        cam = HandModel.load("open", side="left")(pose).joints[0].numpy().astype(np.float64)
    c2w = np.eye(4)
    c2w[:3, :3] = cv2.Rodrigues(np.array([0.1, -0.4, 0.05]))[0]
    c2w[:3, 3] = [0.3, -1.2, 0.7]
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    msg = parse_message(json.dumps({"type": "xrhands", "t": 10, "head": {"c2w": c2w.reshape(-1).tolist()},
                                    "hands": [{"side": "left", "joints": xr_joints_from(world).tolist()}]}))
    assert isinstance(msg, XRHandsMessage) and msg.hands[0][1].shape == (25, 3)
    K = np.asarray(intrinsics_from_fov(60.0, 240, 320), np.float64)
    hand = xr_to_tracked(msg.hands[0][1], "left", msg.c2w, K, 240, 320)
    expected_px = project(torch.from_numpy(cam), torch.from_numpy(K)).numpy()
    np.testing.assert_allclose(hand.image[:, :2] * [320, 240], expected_px, atol=0.05)
    np.testing.assert_allclose(hand.world, cam - cam.mean(0), atol=1e-5)
    behind = xr_joints_from(cam * [1, 1, -1])  # identity head: a hand behind the viewer is not visible
    assert xr_to_tracked(behind, "left", np.eye(4), K, 240, 320) is None
    with pytest.raises(ProtocolError, match="head.c2w"):
        parse_message(json.dumps({"type": "xrhands", "hands": []}))
    with pytest.raises(ProtocolError, match=r"shape \[25, 3\]"):
        parse_message(json.dumps({"type": "xrhands", "head": {"c2w": np.eye(4).reshape(-1).tolist()},
                                  "hands": [{"side": "left", "joints": world.tolist()}]}))


# ---- messages that used to poison a session (issue 23): each is refused with a clear error ----
def _poison_cases() -> dict[str, tuple[str, str]]:
    good = hands_message([_hand()], 10.0, np.eye(4))
    base = json.dumps(good)
    hand = json.dumps(good["hands"][0])

    def head(m: np.ndarray) -> str:
        return json.dumps({**good, "head": {"c2w": m.reshape(-1).tolist()}})

    far = np.eye(4)
    far[0, 3] = 1e20
    shear = np.eye(4)
    shear[0, 1] = 0.5
    stretch = np.diag([2.0, 0.5, 1.0, 1.0])  # det 1, not a rotation
    return {
        "1000-deep JSON": ('{"type": "hands", "hands": [], "x": ' + "[" * 1000 + "]" * 1000 + "}", "too_deep"),
        "1000-deep objects": ('{"type": "reset", "x": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}", "too_deep"),
        "310-digit t": (base.replace('"t": 10.0', '"t": ' + "9" * 310), "bad_number"),
        "310-digit landmark": (base.replace('"world": [[', '"world": [[' + "1" * 310 + ", ", 1), "bad_number"),
        "4301-digit int": ('{"type": "reset", "n": ' + "7" * 4301 + "}", "bad_number"),
        "NaN": (base.replace('"t": 10.0', '"t": NaN'), "bad_number"),
        "-Infinity": (base.replace('"t": 10.0', '"t": -Infinity'), "bad_number"),
        "1e999 float": (base.replace('"t": 10.0', '"t": 1e999'), "bad_message"),
        "1e20 m head pose": (head(far), "bad_message"),
        "shear c2w": (head(shear), "bad_message"),
        "stretch c2w": (head(stretch), "bad_message"),
        "t 1e300": (base.replace('"t": 10.0', '"t": 1e300'), "bad_message"),
        "score 7": (base.replace('"score": 0.9', '"score": 7'), "bad_message"),
        "image z 1e6": (base.replace(hand, json.dumps({**good["hands"][0], "image": [[0.5, 0.5, 1e6]] * 21})),
                        "bad_message"),
    }


@pytest.mark.parametrize("name", list(_poison_cases()))
def test_poisoning_messages_are_refused_with_clear_errors(name):
    raw, code = _poison_cases()[name]
    assert len(raw.encode()) <= MAX_MESSAGE_BYTES  # all under the size cap: each needs its own check
    with pytest.raises(ProtocolError) as err:  # never RecursionError / OverflowError / ValueError
        parse_message(raw)
    assert err.value.code == code, (name, str(err.value))
    assert 10 < len(str(err.value)) < 300


def test_rigid_head_pose_still_accepted():
    c2w = np.eye(4)
    c2w[:3, :3] = cv2.Rodrigues(np.array([0.3, -0.7, 0.2]))[0]
    c2w[:3, 3] = [1.5, -1.6, 3.0]  # a standing viewer a few metres from the origin
    msg = parse_message(json.dumps(hands_message([_hand()], 0.0, c2w.astype(np.float32))))
    np.testing.assert_allclose(msg.c2w, c2w, atol=1e-6)
    assert isinstance(parse_message('{"type": "ping"}'), PingMessage)


def test_message_limit_counts_bytes_not_characters():
    raw = '{"type": "reset", "pad": "' + "é" * 40_000 + '"}'  # 40k characters, 80 KB of UTF-8
    assert len(raw) < MAX_MESSAGE_BYTES < len(raw.encode())
    with pytest.raises(ProtocolError) as err:
        parse_message(raw)
    assert err.value.code == "too_large" and "80" in str(err.value)
    with pytest.raises(ProtocolError, match="too_large|exceeds"):
        parse_message(raw.encode())


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b'{"a": "[[[[[[[[[[[[[[[[", "b": [[1]]}') == 3
    assert json_depth(rb'{"a": "\"[[[[[[[[[[[[[[[[", "b": [[1]]}') == 3  # escaped quote: the slow path
    assert json_depth(b"[" * 50 + b"]" * 50) == 50
    assert parse_message('{"type": "scene", "scene": "[[[[[[[[[[[[[[[[[[[["}').scene == "[" * 20


def test_upload_stored_at_model_resolution_within_a_disk_budget(tmp_path):
    rng = np.random.default_rng(0)
    big = cv2.resize(SceneStore().load("coffee"), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)  # sensor-like grain
    photo = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
    assert 3_000_000 < len(photo) < 8_000_000  # a 12 Mpx photo, like the 5.8 MB one in issue 23
    store = SceneStore(tmp_path, store_size=(240, 320), disk_bytes=1_000_000)
    token, name, (h, w) = store.save_upload(photo.tobytes(), None)
    assert (h, w) == (240, 320)  # 4:3 covers 320x240 exactly; never larger than the frames need
    stored = next(tmp_path.rglob("*.png"))
    assert stored.stat().st_size < 300_000  # was a 50 MB PNG
    assert store.load(name, token).shape == (240, 320, 3)
    tall = cv2.imencode(".png", rng.integers(0, 255, (2000, 400, 3), np.uint8))[1].tobytes()
    _, _, (h, w) = store.save_upload(tall, None)
    assert (h, w) == (1600, 320)  # scaled down until the width just covers the frame
    small = cv2.imencode(".png", rng.integers(0, 255, (100, 120, 3), np.uint8))[1].tobytes()
    assert store.save_upload(small, None)[2] == (100, 120)  # never scaled up
    for _ in range(6):
        store.save_upload(_png(300, 400), None)
    n, size = store.usage()
    assert size <= 1_000_000 and store.evicted >= 1 and n >= 2  # oldest evicted to fit the budget


def test_unreadable_upload_error_has_no_memory_address(tmp_path):
    store = SceneStore(tmp_path)
    with pytest.raises(SceneError) as err:
        store.save_upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, None)
    assert err.value.status == 415 and "0x" not in str(err.value) and "object at" not in str(err.value)


def test_serve_flags_for_kiosk_and_limits_reach_the_config():
    from hand2world.cli import build_parser
    from hand2world.server.cli import _config

    args = build_parser().parse_args([
        "serve", "--source", "preview", "--kiosk", "--kiosk-idle", "5", "--kiosk-turn", "60", "--kiosk-attract", "7",
        "--idle-timeout", "9", "--message-rate", "50", "--message-burst", "70", "--allow-origin", "https://x.example",
        "--token", "abc", "--upload-per-client", "3", "--upload-window", "30", "--upload-disk-mb", "10",
        "--upload-concurrency", "1"])
    c = _config(args)
    assert (c.kiosk, c.kiosk_idle_s, c.kiosk_turn_s, c.kiosk_attract_s) == (True, 5.0, 60.0, 7.0)
    assert (c.idle_timeout_s, c.message_rate, c.message_burst) == (9.0, 50.0, 70)
    assert c.allow_origins == ("https://x.example",) and c.token == "abc"
    assert (c.upload_per_client, c.upload_window_s, c.upload_disk_mb, c.upload_concurrency) == (3, 30.0, 10.0, 1)
    default = _config(build_parser().parse_args(["serve", "--source", "preview"]))
    assert default.idle_timeout_s == 15.0 and default.allow_origins == () and not default.kiosk
