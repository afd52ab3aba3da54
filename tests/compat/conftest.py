"""Fixtures of the compat tests (real Redis/PostgreSQL where the old classes need them)."""

from tests.sink_fixtures import pg_dsn, pg_server, redis_server, redis_url  # noqa: F401
