"""Key names and expiry times of the state store: the old system's Redis schema, kept verbatim.

=================================  ==========================================  ============
key                                holds                                        expires after
=================================  ==========================================  ============
``market:{symbol}:latest``         latest price (and volume, time) of a symbol  ``price``
``market:{symbol}:candle:{tf}``    latest candle of a symbol and timeframe      ``candle``
``strategy:{id}:state``            a strategy's state                           ``state``
``position:{id}:state``            a position's state                           ``state``
``settings:{component}:config``    a component's configuration                  ``state``
=================================  ==========================================  ============

Defaults are the old configuration's ``cache`` section: price 60 s, candle 300 s, state 3600 s.
``None`` means "never expires".

``{tf}`` is the timeframe's marketlake name (Bybit's interval: ``1``, ``5``, ``60``, ``D``), whatever
alias the caller used (``1m``, ``1h``), so that one candle series always has one key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from marketlake.core.symbols import validate_symbol
from marketlake.core.timeframes import parse_timeframe
from marketlake.errors import ConfigError, DataValidationError

__all__ = [
    "StateTTL",
    "candle_key",
    "position_key",
    "price_key",
    "settings_key",
    "strategy_key",
    "validate_key",
]

# Identifiers inside keys: no ':' (it separates the parts), no whitespace or control characters.
_ID_RE: Final = re.compile(r"[A-Za-z0-9_.\-@/+=]{1,200}")
# Whole keys given to get_state/set_state: any visible ASCII (Redis's conventions), up to 512.
_KEY_RE: Final = re.compile(r"[\x21-\x7e]{1,512}")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a usable state key (1-512 visible ASCII characters), else raise.

    Raises:
        DataValidationError: not a string, empty, too long, or holding spaces/control characters.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        shown = repr(key)[:60]
        raise DataValidationError(
            f"invalid state key {shown}: use 1-512 visible ASCII characters without spaces, "
            "e.g. strategy:my-strategy:state"
        )
    return key


def _ident(kind: str, value: object) -> str:
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise DataValidationError(
            f"invalid {kind} id {repr(value)[:60]}: use 1-200 letters, digits and _ . - @ / + ="
        )
    return value


def price_key(symbol: str) -> str:
    """``market:{symbol}:latest``."""
    return f"market:{validate_symbol(symbol)}:latest"


def candle_key(symbol: str, interval: str | int) -> str:
    """``market:{symbol}:candle:{interval}`` with the timeframe's canonical name."""
    return f"market:{validate_symbol(symbol)}:candle:{parse_timeframe(interval).name}"


def strategy_key(strategy_id: str) -> str:
    """``strategy:{id}:state``."""
    return f"strategy:{_ident('strategy', strategy_id)}:state"


def position_key(position_id: str) -> str:
    """``position:{id}:state``."""
    return f"position:{_ident('position', position_id)}:state"


def settings_key(component: str) -> str:
    """``settings:{component}:config``."""
    return f"settings:{_ident('component', component)}:config"


def _seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class StateTTL:
    """How long entries live, in seconds (``None``: forever).

    Attributes:
        price: ``market:{symbol}:latest`` (default 60).
        candle: ``market:{symbol}:candle:{tf}`` (default 300).
        state: strategy, position and settings entries and plain ``set_state`` keys (default 3600).
    """

    price: float | None = 60.0
    candle: float | None = 300.0
    state: float | None = 3600.0

    def __post_init__(self) -> None:
        for name in ("price", "candle", "state"):
            _seconds(f"{name} TTL", getattr(self, name))

    @classmethod
    def from_config(cls, cache: Mapping[str, Any] | None) -> StateTTL:
        """From the old configuration's ``cache`` section (``price_ttl``, ``candle_ttl``,
        ``state_ttl``); missing entries keep their defaults.

        Raises:
            ConfigError: an unknown entry or a value that is not a positive number or None.
        """
        if not cache:
            return cls()
        unknown = set(cache) - {"price_ttl", "candle_ttl", "state_ttl"}
        if unknown:
            raise ConfigError(f"unknown cache setting(s): {', '.join(sorted(unknown))}")
        base = cls()
        return cls(
            price=cache.get("price_ttl", base.price),
            candle=cache.get("candle_ttl", base.candle),
            state=cache.get("state_ttl", base.state),
        )
