"""Bybit v5 public market API described as data: endpoints, categories, intervals, limits, retCodes.

Everything the REST client, the parser and the emulator need to agree on lives here, so that a
change of Bybit's behaviour is a change of one table. Sources: Bybit's v5 documentation (market
endpoints, rate-limit and error-code pages) and the recorded payloads in
``../shared/fixtures/bybit`` (see their ``SOURCES.md``).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

__all__ = [
    "API_RATE_LIMIT_PER_WINDOW",
    "BAN_DEFAULT_SECONDS",
    "CATEGORIES",
    "HEADER_LIMIT",
    "HEADER_LIMIT_RESET",
    "HEADER_LIMIT_STATUS",
    "INSTRUMENTS_LIMIT_DEFAULT",
    "INSTRUMENTS_LIMIT_MAX",
    "INSTRUMENT_STATUSES",
    "INTERVALS",
    "IP_LIMIT_PER_WINDOW",
    "IP_LIMIT_WINDOW_SECONDS",
    "KLINE_CATEGORIES",
    "KLINE_LIMIT_DEFAULT",
    "KLINE_LIMIT_MAX",
    "ARCHIVE_CATEGORIES",
    "ARCHIVE_DIRS",
    "ARCHIVE_URL",
    "MAINNET_URL",
    "MSG_ILLEGAL_CATEGORY",
    "MSG_NOT_SUPPORTED_SYMBOLS",
    "MSG_OK",
    "MSG_SERVER_ERROR",
    "MSG_TOO_MANY_VISITS",
    "FUNDING_CATEGORIES",
    "FUNDING_LIMIT_MAX",
    "FUNDING_INTERVALS_MINUTES",
    "OI_CATEGORIES",
    "OI_INTERVALS",
    "OI_LIMIT_DEFAULT",
    "OI_LIMIT_MAX",
    "PATH_FUNDING_HISTORY",
    "PATH_INSTRUMENTS",
    "PATH_KLINE",
    "PATH_OPEN_INTEREST",
    "PATH_PRICE_KLINES",
    "PRICE_KLINE_CATEGORIES",
    "PRICE_KINDS",
    "PATH_RECENT_TRADE",
    "PATH_SERVER_TIME",
    "RATE_LIMIT_RET_CODES",
    "REQUEST_ERROR_RET_CODES",
    "RETRYABLE_RET_CODES",
    "TESTNET_URL",
    "TRADE_LIMITS",
    "WS_ARGS_CHARS_PER_REQUEST",
    "WS_ARGS_PER_REQUEST",
    "WS_CONNECT_LIMIT",
    "WS_CONNECT_WINDOW_SECONDS",
    "WS_IDLE_CUTOFF_SECONDS",
    "WS_PING_INTERVAL_SECONDS",
    "WS_PUBLIC_PATHS",
    "RetCode",
]

MAINNET_URL: Final = "https://api.bybit.com"
TESTNET_URL: Final = "https://api-testnet.bybit.com"

#: Bybit's daily public trade archives: ``{ARCHIVE_URL}/{dir}/{SYMBOL}/`` is an HTML index of
#: gzip'd CSV files, one per UTC day, published after the day ends. Derivatives (linear and
#: inverse share ``trading``) are named ``{SYMBOL}{YYYY-MM-DD}.csv.gz``; spot
#: ``{SYMBOL}_{YYYY-MM-DD}.csv.gz``. A static host: no rate-limit headers, no envelope.
ARCHIVE_URL: Final = "https://public.bybit.com"
ARCHIVE_DIRS: Final = {"linear": "trading", "inverse": "trading", "spot": "spot"}
ARCHIVE_CATEGORIES: Final = tuple(ARCHIVE_DIRS)

PATH_KLINE: Final = "/v5/market/kline"
PATH_INSTRUMENTS: Final = "/v5/market/instruments-info"
PATH_RECENT_TRADE: Final = "/v5/market/recent-trade"
PATH_SERVER_TIME: Final = "/v5/market/time"
PATH_FUNDING_HISTORY: Final = "/v5/market/funding/history"
PATH_OPEN_INTEREST: Final = "/v5/market/open-interest"
#: Price kinds of the 5-field kline endpoints (open, high, low, close; no volume).
PRICE_KINDS: Final = ("mark", "index", "premium")
PATH_PRICE_KLINES: Final = {
    "mark": "/v5/market/mark-price-kline",
    "index": "/v5/market/index-price-kline",
    "premium": "/v5/market/premium-index-price-kline",
}
#: Categories each price-kline endpoint serves (options have mark klines but no kline grid we use;
#: the premium index exists for USDT/USDC perpetuals only).
PRICE_KLINE_CATEGORIES: Final = {
    "mark": ("linear", "inverse"),
    "index": ("linear", "inverse"),
    "premium": ("linear",),
}
#: ``/v5/market/funding/history``: perpetuals only; newest first, at most 200 rows a page;
#: ``startTime`` alone is refused, ``endTime`` alone gives the 200 rows up to it.
FUNDING_CATEGORIES: Final = ("linear", "inverse")
FUNDING_LIMIT_MAX: Final = 200
#: Funding intervals (``fundingInterval`` of instruments-info, minutes) Bybit has used.
FUNDING_INTERVALS_MINUTES: Final = (60, 120, 240, 480)
#: ``/v5/market/open-interest``: ``intervalTime`` values and their length in ms; cursor pages,
#: newest first, at most 200 rows (default 50).
OI_CATEGORIES: Final = ("linear", "inverse")
OI_INTERVALS: Final = {
    "5min": 300_000,
    "15min": 900_000,
    "30min": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
OI_LIMIT_DEFAULT: Final = 50
OI_LIMIT_MAX: Final = 200
#: Public WebSocket paths by category (the emulator serves them on its REST port).
WS_PUBLIC_PATHS: Final = {
    "linear": "/v5/public/linear",
    "spot": "/v5/public/spot",
    "inverse": "/v5/public/inverse",
}
#: Topics one subscribe request may carry, by category (spot: "args size >10" beyond it).
WS_ARGS_PER_REQUEST: Final = {"spot": 10}
#: Characters all ``args`` of one request may total, by category (linear, inverse, option).
WS_ARGS_CHARS_PER_REQUEST: Final = {"linear": 21_000, "inverse": 21_000, "option": 21_000}
#: Bybit asks for a ``{"op": "ping"}`` every 20 seconds to keep a connection alive.
WS_PING_INTERVAL_SECONDS: Final = 20.0
#: A connection with neither pushes nor ping/pong is cut by Bybit after 10 minutes.
WS_IDLE_CUTOFF_SECONDS: Final = 600.0
#: "Do not frequently connect and disconnect": at most 500 connections per 5 minutes per IP.
WS_CONNECT_LIMIT: Final = 500
WS_CONNECT_WINDOW_SECONDS: Final = 300.0

#: Every v5 market category.
CATEGORIES: Final = ("linear", "inverse", "spot", "option")
#: Categories ``/v5/market/kline`` accepts (options have no klines).
KLINE_CATEGORIES: Final = ("linear", "inverse", "spot")

#: Kline intervals in Bybit's spelling (minutes, then D, W, M).
INTERVALS: Final = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")

KLINE_LIMIT_DEFAULT: Final = 200
KLINE_LIMIT_MAX: Final = 1000
INSTRUMENTS_LIMIT_DEFAULT: Final = 500
INSTRUMENTS_LIMIT_MAX: Final = 1000
#: ``/v5/market/recent-trade`` limits by category: (default, maximum).
TRADE_LIMITS: Final = {
    "spot": (60, 60),
    "linear": (500, 1000),
    "inverse": (500, 1000),
    "option": (50, 100),
}

#: Instrument ``status`` values (``status=`` filter of instruments-info). Default filter: Trading.
INSTRUMENT_STATUSES: Final = ("PreLaunch", "Trading", "Delivering", "Closed")

#: The IP limit shared by all of a machine's HTTP traffic: 600 requests in any 5-second window;
#: past it Bybit answers HTTP 403 and bans the IP ("wait for at least 10 minutes").
IP_LIMIT_PER_WINDOW: Final = 600
IP_LIMIT_WINDOW_SECONDS: Final = 5.0
BAN_DEFAULT_SECONDS: Final = 600.0
#: What marketlake uses of the IP limit by default (``Settings.rate_limit_per_5s``).
API_RATE_LIMIT_PER_WINDOW: Final = 500

HEADER_LIMIT: Final = "X-Bapi-Limit"
HEADER_LIMIT_STATUS: Final = "X-Bapi-Limit-Status"
HEADER_LIMIT_RESET: Final = "X-Bapi-Limit-Reset-Timestamp"


class RetCode(int, Enum):
    """The ``retCode`` values marketlake acts on (Bybit v5 error-code page)."""

    OK = 0
    SERVER_TIMEOUT = 10000
    PARAMS_ERROR = 10001
    TIME_WINDOW = 10002
    TOO_MANY_VISITS = 10006
    SERVER_ERROR = 10016
    ROUTE_NOT_FOUND = 10017
    IP_RATE_LIMIT = 10018
    SYMBOL_INVALID = 10029
    SYSTEM_FREQUENCY = 10429


#: Passing server trouble: retry with backoff.
RETRYABLE_RET_CODES: Final = frozenset(
    {RetCode.SERVER_TIMEOUT, RetCode.SERVER_ERROR, RetCode.SYSTEM_FREQUENCY}
)
#: "Slow down": retry no earlier than ``X-Bapi-Limit-Reset-Timestamp``.
RATE_LIMIT_RET_CODES: Final = frozenset({RetCode.TOO_MANY_VISITS, RetCode.IP_RATE_LIMIT})
#: The request itself is wrong; retrying cannot help.
REQUEST_ERROR_RET_CODES: Final = frozenset(
    {RetCode.PARAMS_ERROR, RetCode.TIME_WINDOW, RetCode.ROUTE_NOT_FOUND, RetCode.SYMBOL_INVALID}
)

#: ``retMsg`` texts as Bybit words them (used by the emulator).
MSG_OK: Final = "OK"
MSG_NOT_SUPPORTED_SYMBOLS: Final = "Not supported symbols"
MSG_ILLEGAL_CATEGORY: Final = "Illegal category"
MSG_TOO_MANY_VISITS: Final = "Too many visits!"
MSG_SERVER_ERROR: Final = "Server error"
