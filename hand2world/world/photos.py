"""Real photographs as surface textures: the per-process texture pool.

Rules:
- The files are ``hand2world.paths.texture_photo_files()`` (Debian desktop-background photos
  that set-up installs, scikit-image's surface photos, or ``$HAND2WORLD_PHOTOS``). The photos
  ``serve`` offers as built-in scenes are excluded there by name: they are test photos, never
  training data.
- Each photo is decoded and downscaled once per process (``photo_pool`` caches): longest side
  at most ``MAX_SIDE`` pixels (``INTER_AREA``), grey photos as RGB. Photos are ordered by file
  name, so a draw by index picks the same photo on every machine with the same pool.
- ``PhotoPool.digest`` names the pool (file names and byte sizes): ``synthesize`` records it in
  ``world.json`` so one dataset never mixes clips made from different pools.
- No photo installed: the pool is empty, one warning is logged, and the world keeps its
  procedural patterns.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from hand2world.paths import texture_photo_files

log = logging.getLogger(__name__)

__all__ = ["MAX_SIDE", "Photo", "PhotoPool", "photo_pool", "pool_digest"]

MAX_SIDE = 512


@dataclass(frozen=True)
class Photo:
    """A texture photo: ``name`` (file stem), ``rgb`` uint8 ``[h, w, 3]`` (longest side <= ``MAX_SIDE``),
    ``mean`` RGB 0..1 and ``grey`` (the source had no colour)."""

    name: str
    rgb: np.ndarray
    mean: tuple[float, float, float]
    grey: bool


@dataclass(frozen=True)
class PhotoPool:
    """The loaded photos, in file-name order, and the pool's ``digest`` ('' when empty)."""

    photos: tuple[Photo, ...]
    digest: str

    def __len__(self) -> int:
        return len(self.photos)


def _load(path) -> Photo | None:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        log.warning("texture photo %s cannot be decoded: skipped", path)
        return None
    grey = img.ndim == 2 or img.shape[2] == 1
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if grey else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    k = MAX_SIDE / max(h, w)
    if k < 1:
        img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(img)
    mean = tuple(float(c) for c in rgb.reshape(-1, 3).mean(0) / 255.0)
    return Photo(path.stem, rgb, mean, grey)


def _files() -> list:
    return sorted(texture_photo_files(), key=lambda f: (f.name, str(f)))


def pool_digest() -> str:
    """The digest ``photo_pool()`` will have, from the file names and sizes alone (nothing decoded); '' if none."""
    files = _files()
    if not files:
        return ""
    return hashlib.sha256("\n".join(f"{f.name}:{f.stat().st_size}" for f in files).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def photo_pool() -> PhotoPool:
    """This process's texture pool (loaded on first call; see module rules)."""
    files = _files()
    digest = pool_digest()
    photos = tuple(p for p in map(_load, files) if p is not None)
    if not photos:
        log.warning("no texture photos found (install mate-backgrounds / lomiri-wallpapers: `make setup`): "
                    "the world uses procedural patterns only")
        return PhotoPool((), "")
    log.info("texture pool: %d photos (%s)", len(photos), digest)
    return PhotoPool(photos, digest)
