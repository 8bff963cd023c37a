"""Every weight, model-asset and data path resolves through this module.

Design: one cache root (``$HAND2WORLD_HOME``, default ``~/.cache/hand2world``) holds what
set-up builds or extracts (the MediaPipe bundle, the open hand model, real test footage).
``asset_path`` is the single place that maps an asset name to a file and fails with an
actionable message when set-up has not produced it.
"""

from __future__ import annotations

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
