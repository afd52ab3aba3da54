"""``marketlake serve``'s body: check every option, build the market, serve until interrupted.

Bad input is refused before anything binds, as marketlake's typed errors (one line and exit code
2 through the CLI; a lake that cannot be replayed is 3): a port outside 0..65535 or in use, a host
that does not resolve, a symbol count outside 1..9999 or a malformed symbol list, a speed that is
negative, NaN or absurd, a lake directory that does not exist (it is never created).
"""

from __future__ import annotations

import errno
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from marketlake.core.symbols import validate_symbol
from marketlake.errors import ConfigError, DataValidationError, LakeError
from marketlake_emulator.market import SyntheticMarket
from marketlake_emulator.server import serve

if TYPE_CHECKING:
    from marketlake.store import Lake

__all__ = ["MAX_SPEED", "parse_symbols_option", "pick_exchange", "serve_command"]

#: The fastest market clock accepted: a year of market per 30 real seconds.
MAX_SPEED: Final = 1_000_000.0
_DAY_MS: Final = 86_400_000


def parse_symbols_option(text: str) -> int | list[str]:
    """``--symbols``: a count (1..9999) or a comma-separated list of symbols.

    Raises:
        DataValidationError: neither (``0``, ``-3``, ``A,,B``, a malformed symbol).
    """
    raw = text.strip()
    if raw.isascii() and raw.isdigit():
        count = int(raw)
        if not 1 <= count <= 9999:
            raise DataValidationError(f"--symbols {raw[:20]}: a count must be 1..9999")
        return count
    names = [s.strip() for s in raw.split(",")]
    if not raw or any(not s for s in names):
        raise DataValidationError(f"--symbols {raw[:40]!r}: expected a count or a comma-separated list of symbols")
    return [validate_symbol(s) for s in names]


def pick_exchange(lake: Lake, exchange: str | None) -> str:
    """The exchange whose candles a lake replay serves: ``exchange`` when given, else ``bybit``
    when stored, else the only exchange stored.

    Raises:
        DataValidationError: no candles at all, none of ``exchange``, or several exchanges and
            none chosen.
    """
    stored = sorted(set(lake.series("candles").get_column("exchange").to_list()))
    if not stored:
        raise DataValidationError(f"the lake at {lake.root} holds no candles to replay")
    if exchange is not None:
        if exchange not in stored:
            raise DataValidationError(
                f"the lake at {lake.root} holds no {exchange[:40]} candles (it has: {', '.join(stored)})"
            )
        return exchange
    if "bybit" in stored or len(stored) == 1:
        return "bybit" if "bybit" in stored else stored[0]
    raise DataValidationError(f"the lake holds candles of {', '.join(stored)}: choose one with --exchange")


def _check_listen(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host[:80]}: cannot resolve it ({exc})") from None
    if port == 0:
        return
    family, kind, proto, _, addr = infos[0]
    # Try the bind now: a port in use is bad input, reported before the market is built.
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(f"cannot listen on {host}:{port}: {why}") from None


def serve_command(
    *,
    host: str,
    port: int,
    symbols: str,
    seed: int,
    speed: float,
    start_ms: int | None,
    lake_dir: Path | None,
    open_lake: Callable[[Path], Lake] | None,
    exchange: str | None,
    on_ready: Callable[[str, str], None],
) -> None:
    """Validate the options of ``marketlake serve``, then serve until Ctrl-C / SIGTERM.

    Args:
        host: Interface to bind.
        port: TCP port (0: a free one).
        symbols: ``--symbols`` text (ignored with a lake).
        seed: Market seed.
        speed: Market-time speed-up, 0 (frozen) .. :data:`MAX_SPEED`.
        start_ms: Market time at start (default: now; with a lake: a day after its last candle).
        lake_dir: A lake to replay instead of a synthetic market.
        open_lake: Opens ``lake_dir`` (the CLI's settings-aware opener).
        exchange: Which exchange's series of the lake to serve (default: see :func:`pick_exchange`).
        on_ready: Called with the base URL and a description of the market once listening.

    Raises:
        ConfigError: a bad host, port or speed.
        DataValidationError: bad symbols, or a lake without candles to serve.
        LakeError: ``lake_dir`` is not a directory.
    """
    if not (math.isfinite(speed) and 0.0 <= speed <= MAX_SPEED):
        raise ConfigError(f"--speed {speed}: must be a number in [0, {MAX_SPEED:g}]")
    _check_listen(host, port)
    if lake_dir is not None:
        from marketlake_emulator.replay import LakeMarket

        if not lake_dir.is_dir():
            raise LakeError(f"no lake at {lake_dir} (serve never creates one)")
        assert open_lake is not None
        the_lake = open_lake(lake_dir)
        chosen = pick_exchange(the_lake, exchange)
        market: SyntheticMarket = LakeMarket(the_lake, exchange=chosen)
        what = f"replaying {chosen} from {lake_dir}"
        if start_ms is None:
            start_ms = market.last_ms + _DAY_MS  # type: ignore[attr-defined]  # every stored candle closed, even D
    else:
        if exchange is not None:
            raise ConfigError("--exchange needs --lake (the synthetic market is Bybit)")
        market = SyntheticMarket.generate(seed, parse_symbols_option(symbols))
        what = "synthetic market"
    serve(host, port, seed=seed, speed=speed, start_ms=start_ms, market=market, on_ready=lambda url: on_ready(url, what))

