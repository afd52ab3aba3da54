"""The state store: strategy/position/settings state and hot market data under the old key names.

Backends: SQLite (embedded default, ``<lake>/_meta/state.sqlite``) and Redis; see
:mod:`marketlake.state.store` for behaviour and :mod:`marketlake.state.keys` for names and TTLs.
"""

from marketlake.state.backend import SQLiteBackend, StateBackend
from marketlake.state.events import EVENTS, StateEvent, Subscription
from marketlake.state.keys import (
    StateTTL,
    candle_key,
    position_key,
    price_key,
    settings_key,
    strategy_key,
)
from marketlake.state.store import StateStore, open_state_store

__all__ = [
    "EVENTS",
    "SQLiteBackend",
    "StateBackend",
    "StateEvent",
    "StateStore",
    "StateTTL",
    "Subscription",
    "candle_key",
    "open_state_store",
    "position_key",
    "price_key",
    "settings_key",
    "strategy_key",
]
