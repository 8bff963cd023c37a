"""hand2world.tracking on real footage (Debian opencv-doc's palm photo and cup video).

The footage and the MediaPipe bundle come from set-up (``make setup``); tests that need them
skip with the reason when they are absent. Bundle building is tested offline with a
stand-in wheel made from the built bundle's models.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hand2world.io import iter_frames, read_image
from hand2world.paths import AssetMissingError, asset_path
from hand2world.tracking import HandTracker, TrackedHand, build_hand_landmarker_bundle
from hand2world.tracking import assets as tracking_assets

log = logging.getLogger(__name__)


def _asset_or_skip(name: str) -> Path:
    path = asset_path(name, must_exist=False)
    if not path.is_file():
        pytest.skip(f"{name} not found at {path}: run `make setup` to build/fetch it")
    return path


@pytest.fixture(scope="module")
def bundle() -> Path:
    return _asset_or_skip("hand_landmarker.task")


@pytest.fixture(scope="module")
def tracker(bundle: Path):
    with HandTracker(bundle, mode="image") as tr:
        yield tr


@pytest.fixture(scope="module")
def palm() -> np.ndarray:
    return read_image(_asset_or_skip("handSrc.jpg"))


# ---------------------------------------------------------------------------------------------- detection
def test_palm_photo_one_hand(tracker: HandTracker, palm: np.ndarray) -> None:
    hands = tracker.detect(palm)
    assert len(hands) == 1
    hand = hands[0]
    assert hand.image.shape == (21, 3) and hand.world.shape == (21, 3)
    assert hand.image.dtype == np.float32 and np.isfinite(hand.world).all()
    # a left palm (palm to the camera, fingers to the right, thumb up) in an unmirrored photo
    assert hand.side == "left" and 0.5 <= hand.score <= 1.0
    wrist_to_middle_mcp = float(np.linalg.norm(hand.world[9] - hand.world[0]))
    assert 0.06 <= wrist_to_middle_mcp <= 0.12, wrist_to_middle_mcp
    h, w = palm.shape[:2]
    px = hand.image_pixels(w, h)
    assert px.shape == (21, 2)
    assert (px[:, 0] >= 0).all() and (px[:, 0] <= w).all() and (px[:, 1] >= 0).all() and (px[:, 1] <= h).all()
    # fingertips to the right of the wrist, thumb tip above it (what the photo shows)
    assert (px[[8, 12, 16], 0] > px[0, 0] + 0.3 * w).all() and px[4, 1] < px[0, 1]
    # world axes follow the image: middle tip right of the wrist in metres too
    assert hand.world[12, 0] - hand.world[0, 0] > 0.1


def test_image_mode_is_deterministic(tracker: HandTracker, palm: np.ndarray) -> None:
    a, b = tracker.detect(palm), tracker.detect(palm)
    np.testing.assert_array_equal(a[0].image, b[0].image)
    np.testing.assert_array_equal(a[0].world, b[0].world)


def test_no_hand_returns_empty(tracker: HandTracker) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    assert tracker.detect(np.zeros((240, 320, 3), np.uint8)) == []
    assert tracker.detect(np.full((240, 320, 3), 200, np.uint8)) == []
    assert tracker.detect(skimage_data.coffee()) == []


@pytest.mark.slow
def test_cup_video_tracking(bundle: Path) -> None:
    """Video mode over all 217 frames: hand in >= 95% of frames, labelled the right hand."""
    video = _asset_or_skip("cup.mp4")
    found, sides, elapsed, n = 0, [], 0.0, 0
    with HandTracker(bundle, mode="video", num_hands=1) as tr:
        for frame in iter_frames(video):
            assert frame.shape == (480, 640, 3)
            t = time.perf_counter()
            hands = tr.detect(frame)
            elapsed += time.perf_counter() - t
            n += 1
            found += bool(hands)
            sides += [h.side for h in hands]
    rate = found / n
    ms = 1000 * elapsed / n
    log.info("cup video: hand in %d/%d frames (%.1f%%), %.1f ms/frame", found, n, 100 * rate, ms)
    assert n == 217
    assert rate >= 0.95
    assert sides.count("right") >= 0.9 * len(sides)  # a real right hand reaching in from the right


def test_mirrored_flag_swaps_sides(bundle: Path) -> None:
    """On horizontally flipped frames MediaPipe's label flips; mirrored=True restores the person's hand."""
    video = _asset_or_skip("cup.mp4")
    frames = [np.ascontiguousarray(f[:, ::-1]) for f in iter_frames(video, max_frames=40)]
    counts = {}
    for mirrored in (False, True):
        with HandTracker(bundle, mode="video", num_hands=1, mirrored=mirrored) as tr:
            sides = [h.side for f in frames for h in tr.detect(f)]
        assert len(sides) >= 0.9 * len(frames)
        counts[mirrored] = sides.count("right") / len(sides)
    assert counts[True] >= 0.8 and counts[False] <= 0.2, counts


def test_video_mode_timestamps_and_repeatability(bundle: Path) -> None:
    video = _asset_or_skip("cup.mp4")
    frames = list(iter_frames(video, max_frames=5))
    runs = []
    for _ in range(2):
        with HandTracker(bundle, mode="video", num_hands=1) as tr:
            runs.append([tr.detect(f) for f in frames])  # generated timestamps
    for a, b in zip(*runs, strict=True):
        assert len(a) == len(b) == 1
        np.testing.assert_array_equal(a[0].image, b[0].image)
    with HandTracker(bundle, mode="video", num_hands=1) as tr:
        tr.detect(frames[0], timestamp_ms=100)
        tr.detect(frames[1], timestamp_ms=140)
        with pytest.raises(ValueError, match="increasing"):
            tr.detect(frames[2], timestamp_ms=140)
        tr.detect(frames[2])  # generated: 140 + 33


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (np.zeros((64, 64, 3), np.float32), ValueError),
        (np.zeros((64, 64), np.uint8), ValueError),
        (np.zeros((64, 64, 4), np.uint8), ValueError),
        (np.zeros((2, 64, 64, 3), np.uint8), ValueError),
        ([[[0, 0, 0]]], TypeError),
    ],
)
def test_bad_input_raises(tracker: HandTracker, bad, exc) -> None:
    with pytest.raises(exc):
        tracker.detect(bad)


def test_missing_bundle_raises_with_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssetMissingError, match="build_hand_landmarker_bundle"):
        HandTracker(tmp_path / "nope.task")
    monkeypatch.setenv("HAND2WORLD_HOME", str(tmp_path))
    with pytest.raises(AssetMissingError, match="setup"):
        HandTracker()


def test_closed_tracker_and_bad_options(bundle: Path) -> None:
    tr = HandTracker(bundle)
    tr.close()
    tr.close()
    with pytest.raises(RuntimeError, match="closed"):
        tr.detect(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError):
        HandTracker(bundle, mode="stream")
    with pytest.raises(ValueError):
        HandTracker(bundle, num_hands=0)


# ---------------------------------------------------------------------------------------------- TrackedHand
def test_tracked_hand_helpers() -> None:
    rng = np.random.default_rng(0)
    image, world = rng.uniform(0, 1, (21, 3)), rng.normal(0, 0.05, (21, 3))
    hand = TrackedHand("right", 0.9, image, world)
    np.testing.assert_allclose(hand.image_pixels(640, 480), image[:, :2] * [640, 480], rtol=1e-6)
    flipped = hand.flip_horizontal()
    assert flipped.side == "right"
    np.testing.assert_allclose(flipped.image[:, 0], 1 - hand.image[:, 0], rtol=1e-6)
    np.testing.assert_allclose(flipped.world[:, 0], -hand.world[:, 0])
    np.testing.assert_allclose(flipped.flip_horizontal().image, hand.image, atol=1e-6)
    back = TrackedHand.from_dict(hand.to_dict())
    assert back.side == "right" and abs(back.score - 0.9) < 1e-4
    np.testing.assert_allclose(back.world, hand.world, atol=1e-5)
    with pytest.raises(ValueError):
        TrackedHand("Right", 0.9, image, world)
    with pytest.raises(ValueError):
        TrackedHand("left", 0.9, image[:20], world)


# ---------------------------------------------------------------------------------------------- assets
def _fake_wheel(bundle: Path, path: Path, corrupt: bool = False) -> Path:
    """A stand-in mediapipe 0.10.21 wheel holding the two models at their wheel paths."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(path, "w") as dst:
        for member, (inner, _) in tracking_assets.BUNDLE_MEMBERS.items():
            data = src.read(member)
            dst.writestr(inner, data + (b"x" if corrupt else b""))
    return path


def test_build_bundle_from_wheel_and_idempotent(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    def no_download(dest):
        raise AssertionError("must not download")

    monkeypatch.setattr(tracking_assets, "_download_wheel", no_download)
    out = tmp_path / "models" / "hand_landmarker.task"
    wheel = _fake_wheel(bundle, tmp_path / "mediapipe-0.10.21-fake.whl")
    assert build_hand_landmarker_bundle(out=out, wheel=wheel) == out
    assert tracking_assets.bundle_loads(out)
    for member, (_, digest) in tracking_assets.BUNDLE_MEMBERS.items():
        assert hashlib.sha256((out.parent / member).read_bytes()).hexdigest() == digest
    assert not list(out.parent.glob(".*.tmp"))  # no temp files left behind
    mtime = out.stat().st_mtime_ns
    (out.parent / "hand_detector.tflite").unlink()
    assert build_hand_landmarker_bundle(out=out) == out  # present + loads: kept, tflite re-extracted
    assert out.stat().st_mtime_ns == mtime and (out.parent / "hand_detector.tflite").is_file()


def test_build_bundle_rejects_wrong_models(bundle: Path, tmp_path: Path) -> None:
    wheel = _fake_wheel(bundle, tmp_path / "bad.whl", corrupt=True)
    out = tmp_path / "hand_landmarker.task"
    with pytest.raises(ValueError, match="sha256"):
        build_hand_landmarker_bundle(out=out, wheel=wheel)
    assert not out.exists()


def test_broken_bundle_is_rebuilt(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "hand_landmarker.task"
    out.write_bytes(b"not a zip")
    assert not tracking_assets.bundle_loads(out)
    build_hand_landmarker_bundle(out=out, wheel=_fake_wheel(bundle, tmp_path / "w.whl"))
    assert tracking_assets.bundle_loads(out)


def test_hands_found_on_real_and_empty_frames(tracker: HandTracker, palm: np.ndarray) -> None:
    """The realism judge: the real palm is found, also shrunk to 96 px (upscaled before detection), a plain
    frame is not; the rate counts only the frames that are said to show a hand."""
    import cv2

    from hand2world.tracking import detection_rate, hands_found

    small = cv2.resize(palm, (96, round(96 * palm.shape[0] / palm.shape[1])), interpolation=cv2.INTER_AREA)
    blank = np.full((96, 96, 3), 127, np.uint8)
    found = hands_found([small, blank, palm], tracker=tracker)
    assert found.tolist() == [True, False, True]
    assert detection_rate(found) == pytest.approx(2 / 3)
    assert detection_rate(found, where=[True, False, False]) == 1.0
    assert detection_rate(found, where=[False, False, False]) is None
