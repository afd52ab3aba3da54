"""pytest fixtures over :mod:`tests.servers`: a clean Redis database or a fresh PostgreSQL
database per test. Imported by the conftest of each test package that needs them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.servers import PostgresServer, RedisServer, shared_postgres, shared_redis


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The test process's Redis server (skips, loudly, when redis-server is not installed)."""
    pytest.importorskip("redis", reason="REDIS TESTS SKIPPED: the redis package is missing (pip install -e '.[test]')")
    server = shared_redis()
    if isinstance(server, str):
        pytest.skip(server)
    return server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis (restarted if an earlier test stopped it)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")
    yield redis_server.url


@pytest.fixture(scope="session")
def pg_server() -> PostgresServer:
    """The test process's PostgreSQL server (skips, loudly, when it is not installed)."""
    pytest.importorskip(
        "psycopg", reason="POSTGRESQL TESTS SKIPPED: the psycopg package is missing (pip install -e '.[test]')"
    )
    server = shared_postgres()
    if isinstance(server, str):
        pytest.skip(server)
    return server


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """The DSN of a new, empty database, dropped afterwards."""
    dsn = pg_server.create_database()
    yield dsn
    pg_server.drop_database(dsn)
