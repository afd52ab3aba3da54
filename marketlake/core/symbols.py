"""Allowlist validation for the names that end up in lake paths: symbols, exchanges, categories.

Validation happens before any path is built, so nothing a user types can escape the lake root or
create an odd directory. The rules are allowlists (what is accepted), never denylists.
"""

from __future__ import annotations

import re
from typing import Final

from marketlake.errors import InvalidSymbolError

__all__ = [
    "CATEGORIES",
    "parse_symbols",
    "validate_category",
    "validate_exchange",
    "validate_symbol",
]

# Upper-case ASCII letters and digits, with inner dashes for dated futures and options
# (``BTC-27DEC24``, ``BTC-27DEC24-100000-C``). 1 to 40 characters. Explicit ASCII ranges: a
# Cyrillic "А" or a full-width "Ｂ" never matches.
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9](?:[A-Z0-9-]{0,38}[A-Z0-9])?")
_EXCHANGE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Bybit v5 market categories.
CATEGORIES: Final = ("linear", "inverse", "spot", "option")


def _shown(value: object) -> str:
    text = str(value)
    if len(text) > 40:
        text = text[:40] + "..."
    return repr(text)


def validate_symbol(symbol: object) -> str:
    """Return ``symbol`` if it is a well-formed exchange symbol, else raise.

    Raises:
        InvalidSymbolError: not a string of upper-case ASCII letters, digits and inner dashes,
            1-40 characters (``../x``, ``BTC/USDT``, NUL, lowercase, unicode look-alikes all fail).
    """
    if not isinstance(symbol, str) or _SYMBOL_RE.fullmatch(symbol) is None or "--" in symbol:
        raise InvalidSymbolError(
            f"invalid symbol {_shown(symbol)}: use 1-40 upper-case ASCII letters, digits and "
            "inner dashes, as the exchange spells it (e.g. BTCUSDT)"
        )
    return symbol


def validate_exchange(exchange: object) -> str:
    """Return ``exchange`` if it is a lower-case identifier (``bybit``), else raise."""
    if not isinstance(exchange, str) or _EXCHANGE_RE.fullmatch(exchange) is None:
        raise InvalidSymbolError(
            f"invalid exchange {_shown(exchange)}: use a lower-case identifier such as 'bybit'"
        )
    return exchange


def validate_category(category: object) -> str:
    """Return ``category`` if it is one of :data:`CATEGORIES`, else raise."""
    if category not in CATEGORIES:
        raise InvalidSymbolError(
            f"invalid category {_shown(category)}: use one of {', '.join(CATEGORIES)}"
        )
    return str(category)


def parse_symbols(values: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Parse a comma-separated string or a sequence of symbols; validate each; keep order."""
    if values is None:
        return []
    items = values.split(",") if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        sym = validate_symbol(item)
        if sym not in out:
            out.append(sym)
    return out
