"""What a REST endpoint of the emulator returns, and the parameter checks they share."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Final

from marketlake.exchanges.bybit import constants as C

__all__ = ["Answer", "ParamError", "cursor_value", "int_param", "params_error"]

_MAX_INT_PARAM: Final = 10**15


class ParamError(Exception):
    """A request parameter Bybit would refuse with retCode 10001."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The envelope fields of one answer (the server adds ``retExtInfo`` and ``time``)."""

    ret_code: int
    ret_msg: str
    result: dict[str, Any]


def params_error(message: str) -> Answer:
    """A retCode 10001 answer with ``message``."""
    return Answer(C.RetCode.PARAMS_ERROR, message, {})


def int_param(query: Any, name: str, default: int | None, lo: int = 0, hi: int = _MAX_INT_PARAM) -> int | None:
    """Query parameter ``name`` as an integer in ``[lo, hi]``, ``default`` when absent.

    Raises:
        ParamError: not a plain decimal integer in range.
    """
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 16 or not lo <= int(raw) <= hi:
        raise ParamError(f"params error: {name} invalid (expected an integer in [{lo}, {hi}])")
    return int(raw)


def cursor_value(cursor: str, key: str) -> str:
    """Field ``key`` of a Bybit page cursor (``first%3DA%26last%3DB``, ``lastid%3D1%26lasttime%3D2``).

    Raises:
        ParamError: the cursor has no such field.
    """
    parsed = urllib.parse.parse_qs(urllib.parse.unquote(cursor), strict_parsing=False)
    value = parsed.get(key)
    if not value or not value[0]:
        raise ParamError("params error: cursor invalid")
    return value[0]
