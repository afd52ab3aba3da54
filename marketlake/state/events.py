"""Events of the state store and market-data managers, delivered to subscribers.

The old system named six events; they keep their names:

===================  ==========================================================
``trade_processed``  a trade went through :meth:`MarketDataManager.process_trade`
``candle_generated`` a candle was built from trades, or a live candle closed
``price_updated``    ``market:{symbol}:latest`` was written
``state_updated``    any other key was written (strategy, position, settings, ...)
``state_deleted``    a key was deleted
``cache_cleared``    keys matching a pattern were removed at once
===================  ==========================================================

Delivery: in the process at once (each subscriber in registration order; a subscriber that
raises is logged and skipped, never failing the write that emitted the event), and, with the
Redis backend, to every other process subscribed to the same Redis through pub/sub (channel
``events:{name}``, a JSON message). A process never receives its own events twice: messages
carry an ``origin`` token and a store ignores the ones it published.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from marketlake.errors import DataValidationError

__all__ = ["EVENTS", "EventBus", "StateEvent", "Subscription"]

log = logging.getLogger(__name__)

EVENTS: Final = (
    "trade_processed",
    "candle_generated",
    "price_updated",
    "state_updated",
    "state_deleted",
    "cache_cleared",
)


class StateEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event.

    Attributes:
        name: One of :data:`EVENTS`.
        key: The key concerned (the pattern for ``cache_cleared``; the symbol's price key for
            market events).
        data: The value written, the trade or candle processed, or ``{"removed": n}``; None for
            deletions.
        ts_ms: When it happened (the store's clock), epoch ms.
        origin: Token of the store that emitted it (tells a process's own events apart).
    """

    name: str
    key: str
    data: dict[str, Any] | None = None
    ts_ms: int = 0
    origin: str = ""


Handler = Callable[[StateEvent], None | Awaitable[None]]


@dataclass(eq=False)
class Subscription:
    """A registered subscriber; :meth:`cancel` stops its deliveries.

    Attributes:
        handler: Called with each :class:`StateEvent` (plain or ``async def``).
        names: The event names it receives (all when empty).
        delivered: Events handed to it.
        errors: Calls that raised.
    """

    handler: Handler
    names: frozenset[str] = frozenset()
    delivered: int = 0
    errors: int = 0
    _bus: EventBus | None = field(default=None, repr=False)

    def wants(self, name: str) -> bool:
        """True when this subscriber receives events called ``name``."""
        return not self.names or name in self.names

    def cancel(self) -> None:
        """Stop delivering to this subscriber (idempotent)."""
        if self._bus is not None:
            self._bus.remove(self)
            self._bus = None


class EventBus:
    """Subscribers of one store, and the token that marks its own events."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex
        self._subs: list[Subscription] = []

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, handler: Handler, names: Iterable[str] | None = None) -> Subscription:
        """Register ``handler`` for ``names`` (all events when None).

        Raises:
            DataValidationError: an event name that is not one of :data:`EVENTS`.
            TypeError: ``handler`` is not callable.
        """
        if not callable(handler):
            raise TypeError("an event handler must be callable")
        wanted = frozenset(names or ())
        unknown = wanted - set(EVENTS)
        if unknown:
            raise DataValidationError(
                f"unknown event(s) {', '.join(sorted(unknown))}; events are {', '.join(EVENTS)}"
            )
        sub = Subscription(handler, wanted, _bus=self)
        self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        """Unregister ``sub`` (no error when already gone)."""
        if sub in self._subs:
            self._subs.remove(sub)

    async def deliver(self, event: StateEvent) -> None:
        """Hand ``event`` to every subscriber that wants it, in registration order."""
        for sub in list(self._subs):
            if not sub.wants(event.name):
                continue
            try:
                result = sub.handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a subscriber's bug must not fail the write that emitted the event
                sub.errors += 1
                log.exception("state event subscriber %r raised", getattr(sub.handler, "__name__", sub.handler))
            sub.delivered += 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StateEvent)


def encode_event(event: StateEvent) -> bytes:
    """The pub/sub message of ``event``."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> StateEvent | None:
    """A pub/sub message back into an event; None (and a warning) for a foreign message."""
    try:
        event = _decoder.decode(data)
    except msgspec.DecodeError:
        log.warning("ignoring a malformed state event message (%d bytes)", len(data))
        return None
    if event.name not in EVENTS:
        log.warning("ignoring a state event message named %r", event.name[:40])
        return None
    return event
