"""Fixtures of the state-store and PostgreSQL-sink tests (real servers on 127.0.0.1)."""

from tests.sink_fixtures import pg_dsn, pg_server, redis_server, redis_url  # noqa: F401
