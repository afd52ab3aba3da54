"""Pure decoding of Bybit's daily public trade archives (``public.bybit.com``): bytes in, frames out.

Two formats, one per directory (:data:`~marketlake.exchanges.bybit.constants.ARCHIVE_DIRS`):

* ``trading/`` (linear and inverse):
  ``timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional``
  and, in newer files, a trailing ``RPI``. ``timestamp`` is epoch **seconds** with up to 4
  decimals (``1585180700.0647``), parsed as text so that no float rounding moves a trade;
  ``trdMatchID`` is the same id the REST and WebSocket feeds call ``execId``, so archive trades
  merge with streamed ones by key. Rows are not guaranteed ascending (older files run newest
  first); the parser sorts them, keeping file order among equal times.
* ``spot/``: ``id,timestamp,price,volume,side[,rpi]`` (epoch ms, lower-case side, ascending), pinned
  by the real file in ``fixtures/bybit``. Its ``id`` counts trades *within the file* (1, 2, ...),
  so it is not the exchange's trade id: such ids are stored as ``{YYYYMMDD}-{id}``, unique across
  days, and an archive day replaces the day's trades rather than merging with streamed ones.

Files arrive gzip'd; :func:`gunzip_bounded` decompresses with a ceiling so that a hostile or
corrupt file cannot exhaust memory. Every failure is an :class:`ExchangeProtocolError` naming the
file and, for a bad value, its line.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zlib
from typing import Final

import polars as pl

from marketlake.errors import ExchangeProtocolError
from marketlake.exchanges.bybit import constants as C

__all__ = [
    "ARCHIVE_MAX_BYTES",
    "SPOT_DUMP_COLUMNS",
    "TRADING_DUMP_COLUMNS",
    "archive_file_name",
    "gunzip_bounded",
    "parse_archive_index",
    "parse_spot_trade_dump",
    "parse_trade_dump",
    "parse_trading_dump",
]

#: Header of a spot daily trade dump (``rpi`` is absent from older files).
SPOT_DUMP_COLUMNS: Final = ("id", "timestamp", "price", "volume", "side", "rpi")
#: Columns a derivatives (``trading/``) dump must have; later trailing columns (``RPI``) are ignored.
TRADING_DUMP_COLUMNS: Final = (
    "timestamp",
    "symbol",
    "side",
    "size",
    "price",
    "tickDirection",
    "trdMatchID",
    "grossValue",
    "homeNotional",
    "foreignNotional",
)
#: Largest decompressed archive file accepted (the busiest real BTCUSDT days are a few hundred MB).
ARCHIVE_MAX_BYTES: Final = 4 << 30

_SECONDS_RE: Final = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"
_GZIP_MAGIC: Final = b"\x1f\x8b"


def archive_file_name(symbol: str, category: str, day: dt.date) -> str:
    """The archive's file name of ``symbol``'s trades on ``day`` (``BTCUSDT2024-01-01.csv.gz``)."""
    if category == "spot":
        return f"{symbol}_{day.isoformat()}.csv.gz"
    return f"{symbol}{day.isoformat()}.csv.gz"


def parse_archive_index(html: bytes | str, symbol: str, category: str) -> list[dt.date]:
    """The days an archive directory index lists for ``symbol``, ascending and distinct.

    The index is a plain HTML listing (``<a href="BTCUSDT2024-01-01.csv.gz">``); links to other
    files (a parent directory, another symbol's prefix, checksums) are ignored.

    Raises:
        ExchangeProtocolError: the page is not text, or a listed name carries an impossible date.
    """
    if isinstance(html, bytes):
        try:
            html = html.decode("utf-8")
        except UnicodeDecodeError:
            raise ExchangeProtocolError(f"bybit archive index of {symbol}: not UTF-8 text") from None
    sep = "_" if category == "spot" else ""
    name_re = re.compile(rf"^{re.escape(symbol)}{sep}(\d{{4}}-\d{{2}}-\d{{2}})\.csv\.gz$")
    days: set[dt.date] = set()
    for href in re.findall(r"""href\s*=\s*["']([^"']+)["']""", html, flags=re.IGNORECASE):
        m = name_re.match(href.rsplit("/", 1)[-1])
        if m is None:
            continue
        try:
            days.add(dt.date.fromisoformat(m.group(1)))
        except ValueError:
            raise ExchangeProtocolError(
                f"bybit archive index of {symbol}: impossible date in {href[:80]!r}"
            ) from None
    return sorted(days)


def gunzip_bounded(data: bytes, *, what: str, max_bytes: int = ARCHIVE_MAX_BYTES) -> bytes:
    """Decompress a gzip file (every member) into at most ``max_bytes``.

    Raises:
        ExchangeProtocolError: not gzip, corrupt, truncated, or larger than ``max_bytes`` once
            decompressed (a gzip bomb or a wrong file).
    """
    if data[:2] != _GZIP_MAGIC:
        raise ExchangeProtocolError(f"{what}: not a gzip file (starts with {data[:24]!r})")
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise ExchangeProtocolError(f"{what}: corrupt gzip data ({exc})") from None
        if len(out) > max_bytes:
            raise ExchangeProtocolError(f"{what}: more than {max_bytes:,} bytes once decompressed")
        if not d.eof:
            raise ExchangeProtocolError(f"{what}: truncated gzip data ({len(data):,} bytes received)")
        rest = d.unused_data
        if rest and rest[:2] != _GZIP_MAGIC:
            if rest.strip(b"\x00"):  # trailing zero padding is tolerated, as gzip(1) does
                raise ExchangeProtocolError(f"{what}: garbage after the gzip data")
            break
    return bytes(out)


def _header(data: bytes) -> list[str]:
    first = data.split(b"\n", 1)[0].strip().lstrip(b"\xef\xbb\xbf")
    return first.decode("utf-8", "replace").split(",")


def _read(data: bytes, columns: list[str], schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    try:
        return pl.read_csv(
            io.BytesIO(data),
            columns=columns,
            schema_overrides=schema,
            has_header=True,
            infer_schema=False,
        )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, pl.exceptions.ShapeError) as exc:
        msg = str(exc).splitlines()[0]
        raise ExchangeProtocolError(f"{what}: cannot read CSV: {msg}") from None


def _first_bad(mask: pl.Series, what: str, column: str, values: pl.Series) -> None:
    """Raise naming the first row where ``mask`` is true (line = row + 2: header, 1-based)."""
    if mask.any():
        row = int(mask.arg_max())  # type: ignore[arg-type]
        raise ExchangeProtocolError(
            f"{what}: line {row + 2}: bad {column} {str(values[row])[:60]!r}"
        )


def parse_trading_dump(
    data: bytes, *, symbol: str | None = None, what: str = "bybit trade archive"
) -> pl.DataFrame:
    """Decode a derivatives (``trading/``) daily dump, uncompressed, into the stored trade schema.

    Args:
        data: The CSV bytes.
        symbol: When given, every row's ``symbol`` must equal it (guards against a wrong file).
        what: Names the file in errors.

    Returns:
        Columns ts (Datetime µs UTC), price, size, side, trade_id, tick_direction,
        is_block_trade (null), ascending by ts (file order among equal times).

    Raises:
        ExchangeProtocolError: the header lacks a column, a value does not parse, a side is unknown, a trade id is empty, or a row names another symbol.
    """
    header = _header(data)
    missing = [c for c in TRADING_DUMP_COLUMNS if c not in header]
    if missing:
        raise ExchangeProtocolError(
            f"{what}: header {','.join(header)[:120]!r} lacks {', '.join(missing)}"
        )
    used = ["timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID"]
    raw = _read(data, used, {c: pl.String() for c in used}, what)
    ts_text = raw.get_column("timestamp").fill_null("")
    _first_bad(~ts_text.str.contains(_SECONDS_RE), what, "timestamp", ts_text)
    parts = ts_text.str.split_exact(".", 1).struct.unnest()
    seconds = parts.get_column("field_0").cast(pl.Int64)
    frac = parts.get_column("field_1").fill_null("").str.pad_end(6, "0").str.slice(0, 6).cast(pl.Int64)
    micros = seconds * 1_000_000 + frac
    numbers = {}
    for col in ("price", "size"):
        text = raw.get_column(col)
        value = text.cast(pl.Float64, strict=False)
        _first_bad(value.is_null() | ~value.is_finite() | (value <= 0), what, col, text)
        numbers[col] = value
    side = raw.get_column("side")
    _first_bad(~side.is_in(["Buy", "Sell"]).fill_null(False), what, "side", side)
    # Informational only: an unexpected label is kept as is, an empty one stored as null, rather
    # than losing a day of trades over it.
    tick = raw.get_column("tickDirection")
    tick = pl.Series("tickDirection", tick, dtype=pl.String).replace("", None)
    trade_id = raw.get_column("trdMatchID")
    _first_bad(trade_id.is_null() | (trade_id.str.len_bytes() == 0), what, "trdMatchID", trade_id.fill_null(""))
    if symbol is not None:
        sym = raw.get_column("symbol")
        _first_bad((sym != symbol).fill_null(True), what, f"symbol (expected {symbol})", sym.fill_null(""))
    out = pl.DataFrame(
        {
            "ts": micros.cast(pl.Datetime("us", "UTC")),
            "price": numbers["price"],
            "size": numbers["size"],
            "side": side,
            "trade_id": trade_id,
            "tick_direction": tick,
            "is_block_trade": pl.Series([None] * raw.height, dtype=pl.Boolean),
        }
    )
    if out.height > 1 and micros[0] > micros[-1]:
        out = out.reverse()  # a newest-first file: equal times keep their execution order
    return out.sort("ts", maintain_order=True)


def parse_spot_trade_dump(
    data: bytes, *, day: dt.date | None = None, what: str = "bybit spot trade dump"
) -> pl.DataFrame:
    """Decode a spot daily dump (uncompressed CSV) into the stored trade schema.

    Args:
        data: The CSV bytes.
        day: The file's day. When given and the ids are the file's own counter (exactly 1..N in
            file order), they become ``{YYYYMMDD}-{id}`` so that they stay unique across days.
        what: Names the file in errors.

    Returns:
        Columns ts (Datetime µs UTC), price, size, side (``Buy``/``Sell``), trade_id,
        tick_direction (null), is_block_trade (null), sorted by ts (stable).

    Raises:
        ExchangeProtocolError: the header is not the spot dump's, a value does not parse, or a
            side is neither buy nor sell.
    """
    header = tuple(_header(data))
    if header not in (SPOT_DUMP_COLUMNS, SPOT_DUMP_COLUMNS[:-1]):
        raise ExchangeProtocolError(
            f"{what}: header {','.join(header)[:80]!r} is not {','.join(SPOT_DUMP_COLUMNS)}"
        )
    used = ["id", "timestamp", "price", "volume", "side"]
    raw = _read(data, used, {c: pl.String() for c in used}, what)
    ts_text = raw.get_column("timestamp").fill_null("")
    _first_bad(~ts_text.str.contains(r"^[0-9]{1,14}$"), what, "timestamp", ts_text)
    numbers = {}
    for col in ("price", "volume"):
        text = raw.get_column(col)
        value = text.cast(pl.Float64, strict=False)
        _first_bad(value.is_null() | ~value.is_finite() | (value <= 0), what, col, text)
        numbers[col] = value
    side_text = raw.get_column("side")
    lower = side_text.str.to_lowercase()
    _first_bad(~lower.is_in(["buy", "sell"]).fill_null(False), what, "side", side_text)
    ids = raw.get_column("id")
    _first_bad(ids.is_null() | (ids.str.len_bytes() == 0), what, "id", ids.fill_null(""))
    if day is not None and raw.height:
        counter = ids.cast(pl.Int64, strict=False)
        if counter.null_count() == 0 and bool((counter == pl.int_range(1, raw.height + 1, eager=True)).all()):
            ids = raw.select((pl.lit(day.strftime("%Y%m%d") + "-") + pl.col("id")).alias("id")).to_series()
    out = pl.DataFrame(
        {
            "ts": (ts_text.cast(pl.Int64) * 1000).cast(pl.Datetime("us", "UTC")),
            "price": numbers["price"],
            "size": numbers["volume"],
            "side": lower.replace_strict({"buy": "Buy", "sell": "Sell"}, return_dtype=pl.String),
            "trade_id": ids,
            "tick_direction": pl.Series([None] * raw.height, dtype=pl.String),
            "is_block_trade": pl.Series([None] * raw.height, dtype=pl.Boolean),
        }
    )
    return out.sort("ts", maintain_order=True)


def parse_trade_dump(
    data: bytes,
    *,
    symbol: str,
    category: str,
    day: dt.date,
    max_bytes: int = ARCHIVE_MAX_BYTES,
) -> pl.DataFrame:
    """Decode one archive file as downloaded (gzip'd, or plain CSV) into the stored trade schema.

    Raises:
        ExchangeProtocolError: see :func:`gunzip_bounded`, :func:`parse_trading_dump` and
            :func:`parse_spot_trade_dump`; also for a category without archives.
    """
    if category not in C.ARCHIVE_DIRS:
        raise ExchangeProtocolError(f"bybit has no trade archive for category {category!r}")
    what = f"bybit trade archive {archive_file_name(symbol, category, day)}"
    if data[:2] == _GZIP_MAGIC:
        data = gunzip_bounded(data, what=what, max_bytes=max_bytes)
    if category == "spot":
        return parse_spot_trade_dump(data, day=day, what=what)
    return parse_trading_dump(data, symbol=symbol, what=what)
