"""Shared test fixtures: real footage and built assets come from set-up (scripts/setup.sh)."""

from __future__ import annotations

import pytest

from hand2world.paths import asset_path


def require_asset(name: str):
    """Path of a set-up asset, or skip with the set-up hint when it is absent."""
    path = asset_path(name, must_exist=False)
    if not path.is_file():
        pytest.skip(f"{name} missing at {path}: run `make setup`")
    return path


@pytest.fixture(scope="session")
def cup_video():
    return require_asset("cup.mp4")
