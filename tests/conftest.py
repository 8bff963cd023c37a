"""Shared test fixtures: real footage and built assets come from set-up (scripts/setup.sh)."""

from __future__ import annotations

import pytest

from hand2world.paths import asset_path

# The one micro video-model architecture of the tests (overrides of the ``tiny`` DiT preset: 2 layers,
# 2 heads, dim 64); test modules import it (``from conftest import MICRO_DIT, micro_dit``) and state what
# they vary.
MICRO_DIT = {"dim": 64, "num_heads": 2, "num_layers": 2, "ffn_dim": 128, "freq_dim": 32, "camera_adapter_dim": 16}


def micro_dit(**changes):
    """``DiTConfig(**MICRO_DIT)`` with ``changes`` (any ``DiTConfig`` field)."""
    from hand2world.models import DiTConfig

    return DiTConfig(**{**MICRO_DIT, **changes})


def require_asset(name: str):
    """Path of a set-up asset, or skip with the set-up hint when it is absent."""
    path = asset_path(name, must_exist=False)
    if not path.is_file():
        pytest.skip(f"{name} missing at {path}: run `make setup`")
    return path


@pytest.fixture(scope="session")
def cup_video():
    return require_asset("cup.mp4")
