"""Scene photos: built-in real photos and per-client uploads.

Design choices:
- Built-ins are real photos that ship inside a registry package (scikit-image's ``skimage.data``,
  offline, CC0 / public domain): ``coffee`` (a cup on a table, the default), ``astronaut``,
  ``chelsea``, ``rocket``. Nothing is fetched at run time.
- Uploads belong to a *token* (an upload namespace the server hands out on the first upload).
  Each token has its own folder under the store root; files are named by the server
  (``<uuid hex>.png``), never by the client, so no client string reaches a path. The bytes
  are size-capped while streaming, checked by magic number (JPEG, PNG, WebP), decoded with
  OpenCV after a header-only pixel-count check (Pillow), scaled down to the smallest size that
  still covers the model's resolution (``store_size``: what the frame source crops to), and
  re-encoded as PNG: the raw upload is never stored, and no upload takes more disk than a frame.
- Disk: all uploads together stay within ``disk_bytes`` and ``max_total`` files; a new upload
  evicts the oldest ones (any token's) instead of locking later users out. Per token at most
  ``MAX_UPLOADS_PER_TOKEN`` (429 beyond); per-client rates are the upload route's job (``guard``).
- A scene is always returned as uint8 RGB; fitting it to the output size (cover crop) is the
  frame source's job.
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

log = logging.getLogger(__name__)

BUILTIN_SCENES: tuple[str, ...] = ("coffee", "astronaut", "chelsea", "rocket")
DEFAULT_SCENE = "coffee"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOADS_PER_TOKEN = 8
MAX_UPLOADS_TOTAL = 256  # across all tokens: new tokens are free, disk is not (the oldest are evicted)
UPLOAD_DISK_BYTES = 64 * 1024 * 1024
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}
_TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
_UPLOAD_RE = re.compile(r"^upload:([0-9a-f]{32})$")


class SceneError(ValueError):
    """A scene cannot be used (unknown, or a bad upload). ``status`` is the HTTP status to answer."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


def image_kind(head: bytes) -> str | None:
    """The image type from the first bytes (``jpeg``, ``png``, ``webp``) or None."""
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def load_builtin(name: str) -> np.ndarray:
    """A built-in scene photo, uint8 RGB [H, W, 3]."""
    if name not in BUILTIN_SCENES:
        raise SceneError(f"unknown scene {name!r}; built-in scenes: {list(BUILTIN_SCENES)}", 404)
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


class SceneStore:
    """Built-in scenes plus uploads kept per token under ``root`` (a fresh temp folder by default)."""

    def __init__(self, root: str | Path | None = None, max_total: int = MAX_UPLOADS_TOTAL,
                 store_size: tuple[int, int] | None = None, disk_bytes: int = UPLOAD_DISK_BYTES) -> None:
        self._own_root = root is None
        self.max_total = max_total
        self.store_size = store_size  # (height, width) uploads are scaled down to cover; None: kept as sent
        self.disk_bytes = disk_bytes
        self.evicted = 0
        self.root = Path(tempfile.mkdtemp(prefix="hand2world-uploads-") if root is None else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}

    def list(self, token: str | None = None) -> list[dict[str, str]]:
        """Scenes a client may pick: the built-ins and its own uploads."""
        scenes = [{"name": n, "kind": "builtin"} for n in BUILTIN_SCENES]
        folder = self._folder(token) if token and _TOKEN_RE.match(token) else None
        if folder is not None and folder.is_dir():
            scenes += [{"name": f"upload:{p.stem}", "kind": "upload"} for p in sorted(folder.glob("*.png"))]
        return scenes

    def _folder(self, token: str) -> Path:
        folder = (self.root / token).resolve()
        if folder.parent != self.root:  # defence in depth; tokens are hex already
            raise SceneError("bad token")
        return folder

    def new_token(self) -> str:
        return secrets.token_hex(16)

    def load(self, name: str, token: str | None = None) -> np.ndarray:
        """Scene by name: a built-in, or ``upload:<id>`` from the caller's token."""
        m = _UPLOAD_RE.match(name)
        if m is None:
            if name not in self._cache:
                self._cache[name] = load_builtin(name)
            return self._cache[name]
        if not token or not _TOKEN_RE.match(token):
            raise SceneError("an uploaded scene needs the token returned by POST /upload", 403)
        path = self._folder(token) / f"{m.group(1)}.png"
        if not path.is_file():
            raise SceneError(f"no uploaded scene {name!r} for this token", 404)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[..., ::-1])

    def save_upload(self, data: bytes, token: str | None) -> tuple[str, str, tuple[int, int]]:
        """Check, decode and store an uploaded photo. Returns (token, scene name, (H, W))."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise SceneError(f"upload of {len(data)} bytes exceeds {MAX_UPLOAD_BYTES} bytes", 413)
        if not data:
            raise SceneError("empty upload", 400)
        if image_kind(data[:16]) is None:
            raise SceneError("not an image: uploads must be JPEG, PNG or WebP", 415)
        if token is None:
            token = self.new_token()
        elif not _TOKEN_RE.match(token):
            raise SceneError("bad token (expected the 32-hex-digit token from a previous upload)", 400)
        folder = self._folder(token)
        if folder.is_dir() and len(list(folder.glob("*.png"))) >= MAX_UPLOADS_PER_TOKEN:  # before decoding
            raise SceneError(f"at most {MAX_UPLOADS_PER_TOKEN} uploads per token", 429)
        try:  # header-only size probe (no pixel decode) against decompression bombs
            with PIL.Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
        except PIL.Image.DecompressionBombError:
            raise SceneError(f"image too large (at most {MAX_UPLOAD_PIXELS} pixels)", 413) from None
        except (PIL.UnidentifiedImageError, OSError, ValueError) as exc:  # the text may name a memory address
            log.info("unreadable upload: %s", exc)
            raise SceneError("the image could not be read (not a valid JPEG, PNG or WebP file)", 415) from None
        if w * h > MAX_UPLOAD_PIXELS:
            raise SceneError(f"image of {w}x{h} is too large (at most {MAX_UPLOAD_PIXELS} pixels)", 413)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.ndim != 3 or min(bgr.shape[:2]) < 16:
            raise SceneError("the image could not be decoded or is smaller than 16x16", 415)
        bgr = self._shrink(bgr)
        ok, png = cv2.imencode(".png", bgr)
        if not ok:
            raise SceneError("could not re-encode the image", 415)
        with self._lock:
            folder.mkdir(exist_ok=True)
            if len(list(folder.glob("*.png"))) >= MAX_UPLOADS_PER_TOKEN:
                raise SceneError(f"at most {MAX_UPLOADS_PER_TOKEN} uploads per token", 429)
            sid = secrets.token_hex(16)
            path = folder / f"{sid}.png"
            path.write_bytes(png.tobytes())
            self._evict(keep=path)
        log.info("scene upload %s: %dx%d (%d bytes stored)", sid, bgr.shape[1], bgr.shape[0], len(png))
        return token, f"upload:{sid}", (int(bgr.shape[0]), int(bgr.shape[1]))

    def _shrink(self, bgr: np.ndarray) -> np.ndarray:
        """Scale down (never up) to the smallest size that still covers ``store_size``."""
        if self.store_size is None:
            return bgr
        (H, W), (h, w) = self.store_size, bgr.shape[:2]
        scale = max(H / h, W / w)
        if scale >= 1.0:
            return bgr
        size = (max(W, round(w * scale)), max(H, round(h * scale)))
        return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)

    def _evict(self, keep: Path) -> None:
        """Delete the oldest uploads until all fit ``max_total`` and ``disk_bytes`` (never ``keep``)."""
        files = sorted(((p.stat().st_mtime_ns, p) for p in self.root.glob("*/*.png")), key=lambda x: x[0])
        total = sum(p.stat().st_size for _, p in files)
        count = len(files)
        for _, p in files:
            if count <= self.max_total and total <= self.disk_bytes:
                break
            if p == keep:
                continue
            size = p.stat().st_size
            p.unlink(missing_ok=True)
            self._cache.pop(str(p), None)
            total, count = total - size, count - 1
            self.evicted += 1
            log.info("upload %s evicted (disk budget)", p.stem)

    def usage(self) -> tuple[int, int]:
        """(number of uploads, bytes on disk)."""
        files = list(self.root.glob("*/*.png"))
        return len(files), sum(p.stat().st_size for p in files)

    def close(self) -> None:
        """Remove the uploads folder when the store made it."""
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
