"""The Redis backend of the state store (redis-py asyncio), for several processes or hosts.

Keys are stored under the old system's names as they are (``market:BTCUSDT:latest``), values are
the JSON documents the store encodes, and expiry is Redis's own (``SET ... PX``). Events travel
over pub/sub: each is published on ``events:{name}`` and every store listening on ``events:*``
receives it.

Failures: any Redis error (refused or dropped connection, timeout, a server answering with an
error, an out-of-memory Redis refusing writes) becomes a :class:`~marketlake.errors.SinkError`
naming the operation and the server (password masked). Retries are few and short (a refused
connection fails in milliseconds), so a dead Redis shows up at once rather than stalling a
trading loop; redis-py reconnects by itself on the next call once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from marketlake.errors import ConfigError, SinkError

__all__ = ["RedisBackend", "mask_url"]

log = logging.getLogger(__name__)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # an optional dependency
        raise ConfigError(
            "the Redis state backend needs the redis package: pip install 'marketlake[redis]'"
        ) from None
    return aioredis


class RedisBackend:
    """State in Redis.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or
            ``unix:///path/to/socket``.
        socket_timeout_s: Timeout of one command.
        connect_timeout_s: Timeout of establishing a connection.
        retries: Extra attempts after a connection error or timeout (with a short backoff).
        client: An existing ``redis.asyncio.Redis`` to use instead (not closed by :meth:`close`).
    """

    kind = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        retries: int = 1,
        client: Any = None,
    ) -> None:
        aioredis = _import_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        self.url = url
        self.location = mask_url(url)
        self._own_client = client is None
        if client is None:
            try:
                client = aioredis.Redis.from_url(
                    url,
                    socket_timeout=socket_timeout_s,
                    socket_connect_timeout=connect_timeout_s,
                    retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), max(0, int(retries))),
                    decode_responses=False,
                )
            except ValueError as exc:  # a malformed URL
                raise ConfigError(f"bad Redis URL {self.location!r}: {exc}") from None
        self.client = client
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisBackend({self.location!r})"

    def _error(self, what: str, exc: BaseException) -> SinkError:
        return SinkError(f"redis {self.location}: {what} failed: {type(exc).__name__}: {exc}")

    async def _call(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise self._error(what, exc) from exc

    async def ping(self) -> None:
        """Round-trip to the server (raises :class:`SinkError` when it cannot be reached)."""
        await self._call("PING", self.client.ping())

    async def get(self, key: str) -> bytes | None:
        value = await self._call(f"GET {key}", self.client.get(key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        px = None if ttl_s is None else max(1, int(ttl_s * 1000))
        await self._call(f"SET {key}", self.client.set(key, value, px=px))

    async def delete(self, key: str) -> bool:
        return bool(await self._call(f"DEL {key}", self.client.delete(key)))

    async def _scan(self, pattern: str) -> list[bytes]:
        return [k async for k in self.client.scan_iter(match=pattern, count=1000)]

    async def keys(self, pattern: str) -> list[str]:
        found = await self._call(f"SCAN {pattern}", self._scan(pattern))
        return sorted({k.decode() for k in found})

    async def clear(self, pattern: str) -> int:
        found = await self._call(f"SCAN {pattern}", self._scan(pattern))
        removed = 0
        for i in range(0, len(found), 500):
            removed += int(await self._call(f"UNLINK {pattern}", self.client.unlink(*found[i : i + 500])))
        return removed

    async def publish(self, channel: str, message: bytes) -> None:
        await self._call(f"PUBLISH {channel}", self.client.publish(channel, message))

    async def listen(self, pattern: str, on_message: Callable[[bytes], None]) -> None:
        """PSUBSCRIBE ``pattern`` and deliver messages from a background task; returns once the
        server confirmed the subscription, so no event published afterwards is missed."""
        if self._pubsub is not None:
            return
        pubsub = self.client.pubsub(ignore_subscribe_messages=False)
        await self._call(f"PSUBSCRIBE {pattern}", pubsub.psubscribe(pattern))
        while True:
            msg = await self._call(
                f"PSUBSCRIBE {pattern}", pubsub.get_message(ignore_subscribe_messages=False, timeout=5.0)
            )
            if msg is None:
                await pubsub.aclose()
                raise SinkError(f"redis {self.location}: PSUBSCRIBE {pattern} was not confirmed")
            if msg.get("type") == "psubscribe":
                break
        self._pubsub = pubsub
        self._listener = asyncio.ensure_future(self._listen(pubsub, on_message))

    async def _listen(self, pubsub: Any, on_message: Callable[[bytes], None]) -> None:
        from redis.exceptions import RedisError

        while True:
            try:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Redis went away: events from other processes stop until it is back; the
                # subscription is re-established by redis-py on reconnect.
                log.warning("redis %s: event subscription interrupted: %s", self.location, exc)
                await asyncio.sleep(0.5)
                continue
            if msg is not None and msg.get("type") == "pmessage":
                data = msg.get("data")
                if isinstance(data, (bytes, bytearray)):
                    on_message(bytes(data))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None
        if self._own_client and self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
