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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 for the whole session (see tests/s3server.py)."""
    from tests.s3server import running_s3_server

    with running_s3_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def any_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """An empty lake on each backend: a local directory, and a bucket of the S3 test server.
    The behaviour suites take this fixture so every backend passes the same tests."""
    if request.param == "local":
        return Lake(tmp_path / "lake", settings=Settings.load(environ={}))
    server = request.getfixturevalue("s3_server")
    return Lake(f"s3://{server.new_bucket()}/lake", settings=server.settings(tmp_path / "state"))
