"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketlake.settings import Settings
from marketlake.store import Lake

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.is_dir():  # a CI checkout may sit elsewhere relative to ../shared
    SHARED = Path.cwd().parent / "shared"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake in a temporary directory, with settings independent of the environment."""
    return Lake(tmp_path / "lake", settings=Settings.load(environ={}))


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` (recorded payloads, real data); tests skip loudly when it is missing."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found (looked at {SHARED})")
    return SHARED
