"""Set-up of the MediaPipe hand-landmarker model bundle (``hand_landmarker.task``).

Design choices:

- Source: the current mediapipe wheels (1.2.x) have the Tasks API but ship no models, while
  the PyPI wheel of mediapipe 0.10.21 still carries the *full* palm-detection and
  hand-landmark TFLite models (the *lite* ones lack the NormalizationOptions metadata the
  Tasks graph needs). Set-up fetches that one wheel through pip (``pip download --no-deps``,
  pinned to one platform build so the bytes are always the same), checks the two models
  against pinned SHA-256 digests, and packs them with mediapipe's own
  ``create_model_asset_bundle`` into the ``.task`` zip the Tasks API (Python and the
  browser's ``@mediapipe/tasks-vision``) loads.
- Only set-up may touch the network; run-time code (``HandTracker``) only reads the built file
  and raises ``AssetMissingError`` with the set-up hint when it is absent.
- Idempotent and atomic: an existing bundle that opens in a HandLandmarker is kept (unless
  ``force``); a new one is written to a temp file in the target folder, test-loaded, then
  renamed over the target, so a crash never leaves a half-written bundle behind.
- The two raw ``.tflite`` files are also written next to the bundle (same member names as
  inside it) for clients that want them separately.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from hand2world.paths import asset_path, sha256_hex

log = logging.getLogger(__name__)

MEDIAPIPE_MODEL_VERSION = "0.10.21"
# The one wheel that is downloaded (any platform build holds the same models; pinning one
# keeps the download reproducible on every machine).
_WHEEL_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                   "--implementation", "cp", "--abi", "cp311")

# bundle member name -> (path inside the 0.10.21 wheel, sha256 of the model bytes)
BUNDLE_MEMBERS: dict[str, tuple[str, str]] = {
    "hand_detector.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmarks_detector.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
}


def bundle_loads(path: Path) -> bool:
    """True when ``path`` is a hand-landmarker bundle that MediaPipe can open."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            if not set(BUNDLE_MEMBERS) <= set(zf.namelist()):
                return False
    except zipfile.BadZipFile:
        return False
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision.hand_landmarker import HandLandmarker, HandLandmarkerOptions

    try:
        landmarker = HandLandmarker.create_from_options(
            HandLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(path)))
        )
    except (RuntimeError, ValueError) as exc:
        log.warning("bundle %s does not load: %s", path, exc)
        return False
    landmarker.close()
    return True


def _download_wheel(dest: Path) -> Path:
    """Fetch the mediapipe 0.10.21 wheel with pip into ``dest`` (set-up only)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *_WHEEL_PLATFORM,
           f"mediapipe=={MEDIAPIPE_MODEL_VERSION}", "-d", str(dest), "--quiet"]
    log.info("downloading mediapipe==%s (for its hand models): %s", MEDIAPIPE_MODEL_VERSION, " ".join(cmd))
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_MODEL_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download left no mediapipe {MEDIAPIPE_MODEL_VERSION} wheel in {dest}")
    return wheels[0]


def _models_from_wheel(wheel: Path) -> dict[str, bytes]:
    """Read and verify the two full hand models from a mediapipe 0.10.21 wheel."""
    models: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        for member, (inner, digest) in BUNDLE_MEMBERS.items():
            try:
                data = zf.read(inner)
            except KeyError as exc:
                raise ValueError(
                    f"{wheel} has no {inner}; use the mediapipe {MEDIAPIPE_MODEL_VERSION} wheel"
                ) from exc
            if sha256_hex(data) != digest:
                raise ValueError(f"{inner} in {wheel} has sha256 {sha256_hex(data)}, expected {digest}")
            models[member] = data
            log.info("read %s from %s (%.1f MB, sha256 ok)", inner, wheel.name, len(data) / 1e6)
    return models


def _models_from_bundle(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as zf:
        return {member: zf.read(member) for member in BUNDLE_MEMBERS}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract_tflite(models: dict[str, bytes], folder: Path) -> None:
    """Write the raw models next to the bundle unless identical copies are there."""
    for member, data in models.items():
        target = folder / member
        if target.is_file() and sha256_hex(target.read_bytes()) == sha256_hex(data):
            continue
        _write_atomic(target, data)
        log.info("wrote %s", target)


def build_hand_landmarker_bundle(
    out: Path | None = None, wheel: Path | None = None, force: bool = False
) -> Path:
    """Build ``hand_landmarker.task`` (and the two ``.tflite`` files beside it).

    Args:
        out: bundle path; default ``asset_path("hand_landmarker.task", must_exist=False)``.
        wheel: a local mediapipe 0.10.21 wheel; default ``$HAND2WORLD_MEDIAPIPE_WHEEL`` if set,
            else one is fetched with ``pip download`` into a temporary folder.
        force: rebuild even when a loadable bundle exists.

    Returns:
        The bundle path.
    """
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import (
        create_model_asset_bundle,
    )

    out = Path(out) if out is not None else asset_path("hand_landmarker.task", must_exist=False)
    out.parent.mkdir(parents=True, exist_ok=True)

    if not force and bundle_loads(out):
        log.info("hand-landmarker bundle present and loadable: %s", out)
        _extract_tflite(_models_from_bundle(out), out.parent)
        return out

    if wheel is None and os.environ.get("HAND2WORLD_MEDIAPIPE_WHEEL"):
        wheel = Path(os.environ["HAND2WORLD_MEDIAPIPE_WHEEL"])
    with tempfile.TemporaryDirectory(prefix="h2w_mediapipe_") as tmpdir:
        if wheel is None:
            wheel = _download_wheel(Path(tmpdir))
        elif not Path(wheel).is_file():
            raise FileNotFoundError(f"mediapipe wheel not found: {wheel}")
        models = _models_from_wheel(Path(wheel))

        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        try:
            create_model_asset_bundle(models, tmp)
            if not bundle_loads(Path(tmp)):
                raise RuntimeError(f"the freshly built bundle {tmp} does not load in MediaPipe")
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the bundle is also served to the browser
            os.replace(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
    log.info("built %s (%.1f MB)", out, out.stat().st_size / 1e6)
    _extract_tflite(models, out.parent)
    return out
