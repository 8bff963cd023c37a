"""Video and image I/O at the package boundary (PyAV + OpenCV).

Frames are uint8 RGB ``[H, W, 3]``; clips ``[T, H, W, 3]``. Reading streams frames so long
videos never sit in memory whole; writing encodes H.264 (yuv420p, even sizes) so the MP4s
play in browsers and common players.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)


def _maybe_gunzip(path: Path) -> Path:
    """Return a readable path for ``*.gz`` videos (decompressed once into a temp file)."""
    if path.suffix != ".gz":
        return path
    out = Path(tempfile.gettempdir()) / f"h2w_{path.stem}"
    if not out.exists() or out.stat().st_mtime < path.stat().st_mtime:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def video_info(path: str | Path) -> dict:
    """Frame count (may be an estimate), fps, width and height of a video file."""
    path = _maybe_gunzip(Path(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        frames = stream.frames
        if not frames and stream.duration:
            frames = int(round(float(stream.duration * stream.time_base) * fps))
        return {"frames": int(frames), "fps": fps, "width": stream.width, "height": stream.height}


def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield decoded frames of a video as uint8 RGB ``[H, W, 3]``."""
    path = _maybe_gunzip(Path(path))
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")


def read_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode a whole video: uint8 ``[T, H, W, 3]``."""
    frames = list(iter_frames(path, max_frames))
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return np.stack(frames)


def fit_cover(frames: np.ndarray, height: int, width: int,
              K: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize (aspect kept) to cover ``height x width``, centre-crop, and adjust ``K`` to match.

    The one resize-and-crop of scene photos, clips and gesture videos (model input, server scenes).

    Args:
        frames: uint8 ``[H, W, 3]`` or a stack ``[T, H, W, 3]``.
        K: 3x3 intrinsics in pixels of ``frames`` (None: no camera to adjust).

    Returns:
        ``[height, width, 3]`` (or ``[T, height, width, 3]``) and the adjusted ``K`` (float64; None if none given).
    """
    h, w = frames.shape[-3:-1]
    K2 = None if K is None else np.asarray(K, np.float64).copy()
    if (h, w) == (height, width):
        return np.ascontiguousarray(frames), K2
    s = max(height / h, width / w)
    nh, nw = max(height, round(h * s)), max(width, round(w * s))
    y0, x0 = (nh - height) // 2, (nw - width) // 2
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR

    def one(rgb: np.ndarray) -> np.ndarray:
        return cv2.resize(rgb, (nw, nh), interpolation=interp)[y0:y0 + height, x0:x0 + width]

    out = np.stack([one(f) for f in frames]) if frames.ndim == 4 else np.ascontiguousarray(one(frames))
    if K2 is not None:
        K2[0] *= nw / w
        K2[1] *= nh / h
        K2[0, 2] -= x0
        K2[1, 2] -= y0
    return out, K2


def fit_square(frames: np.ndarray, size: int, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fit_cover`` to a ``size x size`` square (the model resolution); frames and float32 ``K``."""
    out, K2 = fit_cover(frames, size, size, K)
    return out, K2.astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """Encode uint8 RGB ``[H, W, 3]`` as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write uint8 RGB ``[H, W, 3]`` to an image file (PNG/JPEG by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write image: {path}")
    return path


class VideoWriter:
    """Incremental H.264 MP4 writer: ``with VideoWriter(path, fps) as w: w.write(rgb)``.

    Frame size is taken from the first frame and rounded down to even numbers (yuv420p).
    """

    def __init__(self, path: str | Path, fps: float = 16.0, crf: int = 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.crf = crf
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one uint8 RGB frame ``[H, W, 3]``."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected uint8 [H,W,3], got {rgb.dtype} {rgb.shape}")
        if self._container is None:
            h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
            self._size = (h, w)
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        h, w = self._size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            log.info("wrote %s (%d frames)", self.path, self.frames)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float = 16.0) -> Path:
    """Write uint8 ``[T, H, W, 3]`` frames to an H.264 MP4."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
