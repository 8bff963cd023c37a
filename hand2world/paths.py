"""Every weight, model-asset and data path resolves through this module.

Design: one cache root (``$HAND2WORLD_HOME``, default ``~/.cache/hand2world``) holds what
set-up builds or extracts (the MediaPipe bundle, the open hand model, real test footage).
``asset_path`` is the single place that maps an asset name to a file and fails with an
actionable message when set-up has not produced it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# name -> (relative location under home(), what produces it)
ASSETS: dict[str, str] = {
    "hand_landmarker.task": "models/hand_landmarker.task",
    "open_hand_right.npz": "models/open_hand_right.npz",
    "open_hand_left.npz": "models/open_hand_left.npz",
    "cup.mp4": "data/cup.mp4",
    "handSrc.jpg": "data/handSrc.jpg",
}


#: photos the synthetic world may use as textures: (folder, file glob, file stems that are not photographs).
#: Debian desktop-background packages that set-up installs (mate-backgrounds, lomiri-wallpapers);
#: other folders are ignored so an illustration package never passes for photographs.
TEXTURE_PHOTO_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/usr/share/backgrounds/mate/nature", "*.jpg", ()),
    ("/usr/share/backgrounds", "*_by_*.jpg",
     ("Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88", "Painting-Colors_by__herobrine7gamer",
      "umang_by_Abhishek_Mudgal")),
)
#: scikit-image's offline photos of surfaces (brick wall, grass, gravel)
SKIMAGE_TEXTURE_PHOTOS: tuple[str, ...] = ("brick", "grass", "gravel")
#: never textures: the photos ``serve`` offers as built-in scenes (``server.scenes.BUILTIN_SCENES``; ``cat`` is
#: ``chelsea``) stay an honest test of photos no model has seen
EXCLUDED_PHOTOS: tuple[str, ...] = ("coffee", "astronaut", "chelsea", "cat", "rocket")


class AssetMissingError(FileNotFoundError):
    """A required asset is absent; the message says how to create it."""


def home() -> Path:
    """Cache root for built assets: ``$HAND2WORLD_HOME`` or ``~/.cache/hand2world``."""
    return Path(os.environ.get("HAND2WORLD_HOME", Path.home() / ".cache" / "hand2world")).expanduser()


def client_dir() -> Path:
    """The web client folder (``client/``), whose ``node_modules`` holds the npm assets."""
    return Path(os.environ.get("HAND2WORLD_CLIENT_DIR", REPO_ROOT / "client"))


def outputs_dir() -> Path:
    """Default folder for things people look at (videos, plots): ``$HAND2WORLD_OUTPUTS`` or ``outputs/``."""
    return Path(os.environ.get("HAND2WORLD_OUTPUTS", REPO_ROOT / "outputs"))


def asset_path(name: str, must_exist: bool = True) -> Path:
    """Resolve a named asset to its file.

    Args:
        name: one of ``ASSETS`` (e.g. ``"hand_landmarker.task"``).
        must_exist: raise ``AssetMissingError`` when the file is absent.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    path = home() / ASSETS[name]
    if must_exist and not path.is_file():
        raise AssetMissingError(
            f"asset {name!r} not found at {path}. Run `make setup` (or `hand2world setup`) to build it."
        )
    return path


def runs_dir() -> Path:
    """Default parent of training runs: ``$HAND2WORLD_RUNS`` or ``outputs/runs``."""
    return Path(os.environ.get("HAND2WORLD_RUNS", outputs_dir() / "runs"))


def weights_dir() -> Path:
    """Shipped checkpoints: ``$HAND2WORLD_WEIGHTS`` or the repository's ``weights/``."""
    return Path(os.environ.get("HAND2WORLD_WEIGHTS", REPO_ROOT / "weights"))


def checkpoint_path(name_or_path: str | os.PathLike, must_exist: bool = True) -> Path:
    """Resolve a checkpoint: an existing folder/file, a shipped name under ``weights_dir()``, or a
    run under ``runs_dir()``. A run folder resolves to its ``final/`` release, else its latest
    checkpoint; a ``checkpoints/`` folder to the one ``latest`` names.
    """
    raw = Path(name_or_path).expanduser()
    candidates = [raw] if raw.is_absolute() else [raw, weights_dir() / raw, runs_dir() / raw]
    for path in candidates:
        if not path.exists():
            continue
        if (path / "final" / "config.json").is_file():
            return path / "final"
        pointer = path / "checkpoints" / "latest" if (path / "checkpoints").is_dir() else path / "latest"
        if not (path / "config.json").is_file() and pointer.is_file():
            return pointer.parent / pointer.read_text().strip()
        return path
    if must_exist:
        looked = ", ".join(map(str, candidates))
        raise AssetMissingError(f"checkpoint {str(name_or_path)!r} not found (looked in {looked}); "
                                "train one with `hand2world train ...` or give a path")
    return candidates[-1]


def sha256_hex(source: bytes | str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of ``bytes`` or of a file's contents (read in chunks): the one checksum of assets and weights."""
    h = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        h.update(source)
        return h.hexdigest()
    with Path(source).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def texture_photo_files() -> list[Path]:
    """The real photographs the synthetic world may use as textures, sorted by path.

    ``$HAND2WORLD_PHOTOS`` (folders separated by ``os.pathsep``; every .jpg/.jpeg/.png in them)
    replaces the default sources: ``TEXTURE_PHOTO_SOURCES`` plus scikit-image's
    ``SKIMAGE_TEXTURE_PHOTOS``. Any file whose stem is in ``EXCLUDED_PHOTOS`` is dropped.
    """
    files: list[Path] = []
    env = os.environ.get("HAND2WORLD_PHOTOS")
    if env:
        for folder in filter(None, env.split(os.pathsep)):
            files += [f for f in Path(folder).expanduser().iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    else:
        for folder, pattern, not_photos in TEXTURE_PHOTO_SOURCES:
            files += [f for f in Path(folder).glob(pattern) if f.stem not in not_photos]
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        if spec is not None and spec.submodule_search_locations:
            data = Path(next(iter(spec.submodule_search_locations))) / "data"
            files += [data / f"{n}.png" for n in SKIMAGE_TEXTURE_PHOTOS if (data / f"{n}.png").is_file()]
    return sorted(f for f in files if f.is_file() and f.stem.lower() not in EXCLUDED_PHOTOS)
