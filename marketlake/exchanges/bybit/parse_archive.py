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

try:  # ISA-L inflates 2-3x faster than zlib; both decode the same gzip streams
    from isal import isal_zlib as _inflate

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (_inflate.error, zlib.error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps a broken install working
    _inflate = zlib  # type: ignore[assignment]
    _INFLATE_ERRORS = (zlib.error,)

import polars as pl

from marketlake.errors import DamagedPayloadError, ExchangeProtocolError
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
        DamagedPayloadError: corrupt or truncated gzip data, or garbage after it (fetch again).
        ExchangeProtocolError: not gzip at all, or larger than ``max_bytes`` once decompressed
            (a gzip bomb or a wrong file).
    """
    if data[:2] != _GZIP_MAGIC:
        raise ExchangeProtocolError(f"{what}: not a gzip file (starts with {data[:24]!r})")
    pieces: list[bytes] = []
    size = 0
    rest = data
    while rest:
        d = _inflate.decompressobj(wbits=31)
        try:
            piece = d.decompress(rest, max_bytes + 1 - size)
        except _INFLATE_ERRORS as exc:
            raise DamagedPayloadError(f"{what}: corrupt gzip data ({exc})") from None
        size += len(piece)
        pieces.append(piece)
        if size > max_bytes:
            raise ExchangeProtocolError(f"{what}: more than {max_bytes:,} bytes once decompressed")
        if not d.eof:
            raise DamagedPayloadError(f"{what}: truncated gzip data ({len(data):,} bytes received)")
        rest = d.unused_data
        if rest and rest[:2] != _GZIP_MAGIC:
            if rest.strip(b"\x00"):  # trailing zero padding is tolerated, as gzip(1) does
                raise DamagedPayloadError(f"{what}: garbage after the gzip data")
            break
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


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


def _check(conv: pl.DataFrame, raw: pl.DataFrame, checks: dict[str, tuple[pl.Expr, str]], what: str) -> None:
    """Raise naming the first bad row of the first failing check (line = row + 2: header, 1-based).

    ``checks`` maps a label to (mask of bad rows over ``conv``, column of ``raw`` to show). All
    checks are evaluated in one parallel pass; rows are located only on failure.
    """
    if conv.height == 0:
        return
    anys = conv.select([mask.fill_null(True).any().alias(label) for label, (mask, _) in checks.items()]).row(0)
    for (label, (mask, column)), bad in zip(checks.items(), anys, strict=True):
        if bad:
            row = int(conv.select(mask.fill_null(True).arg_max()).item())
            shown = raw.get_column(column)[row]
            raise ExchangeProtocolError(f"{what}: line {row + 2}: bad {label} {str(shown or '')[:60]!r}")


def _positive(name: str) -> pl.Expr:
    return pl.col(name).is_null() | ~pl.col(name).is_finite() | (pl.col(name) <= 0)


def _in_time_order(out: pl.DataFrame) -> pl.DataFrame:
    """Ascending by ts, keeping execution order among equal times (newest-first files reversed)."""
    ts = out.get_column("ts")
    if ts.is_sorted():
        return out
    if out.height > 1 and ts[0] > ts[-1]:
        out = out.reverse()
        if out.get_column("ts").is_sorted():
            return out
    return out.sort("ts", maintain_order=True)


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
        ExchangeProtocolError: the header lacks a column, a value does not parse, a side is
            unknown, a trade id is empty, or a row names another symbol.
    """
    header = _header(data)
    missing = [c for c in TRADING_DUMP_COLUMNS if c not in header]
    if missing:
        raise ExchangeProtocolError(
            f"{what}: header {','.join(header)[:120]!r} lacks {', '.join(missing)}"
        )
    used = ["timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID"]
    raw = _read(data, used, {c: pl.String() for c in used}, what)
    # Seconds as an exact decimal: 1585180700.0647 is 1585180700064700 µs, which a float path
    # misses by one for about half of real times. (Digits past the µs round half to even.)
    seconds = pl.col("timestamp").str.strip_chars_end().cast(pl.Decimal(20, 6), strict=False)
    conv = raw.select(
        (seconds * 1_000_000).cast(pl.Int64, strict=False).alias("ts"),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("size").cast(pl.Float64, strict=False),
        pl.col("side"),
        pl.col("trdMatchID").alias("trade_id"),
        # Informational only: an unexpected label is kept, an empty one stored as null, rather
        # than losing a day of trades over it.
        pl.col("tickDirection").replace("", None).alias("tick_direction"),
        pl.col("symbol"),
    )
    checks = {
        "timestamp": (pl.col("ts").is_null() | (pl.col("ts") <= 0), "timestamp"),
        "size": (_positive("size"), "size"),
        "price": (_positive("price"), "price"),
        "side": (~pl.col("side").is_in(["Buy", "Sell"]), "side"),
        "trdMatchID": (pl.col("trade_id").is_null() | (pl.col("trade_id").str.len_bytes() == 0), "trdMatchID"),
    }
    if symbol is not None:
        checks[f"symbol (expected {symbol})"] = (pl.col("symbol") != symbol, "symbol")
    _check(conv, raw, checks, what)
    out = conv.select(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        "price",
        "size",
        "side",
        "trade_id",
        "tick_direction",
        pl.lit(None, dtype=pl.Boolean).alias("is_block_trade"),
    )
    return _in_time_order(out)


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
    side = pl.col("side").str.to_lowercase()
    conv = raw.select(
        pl.col("id"),
        pl.col("timestamp").cast(pl.Int64, strict=False).alias("ts"),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("volume").cast(pl.Float64, strict=False).alias("size"),
        pl.when(side == "buy").then(pl.lit("Buy")).when(side == "sell").then(pl.lit("Sell")).alias("side"),
    )
    _check(
        conv,
        raw,
        {
            "timestamp": (pl.col("ts").is_null() | (pl.col("ts") <= 0), "timestamp"),
            "price": (_positive("price"), "price"),
            "volume": (_positive("size"), "volume"),
            "side": (pl.col("side").is_null(), "side"),
            "id": (pl.col("id").is_null() | (pl.col("id").str.len_bytes() == 0), "id"),
        },
        what,
    )
    trade_id = pl.col("id")
    if day is not None and conv.height:
        # The file's own counter 1..N (in file order) says nothing across days: prefix the day.
        counter = conv.get_column("id").cast(pl.Int64, strict=False)
        if counter.null_count() == 0 and bool((counter == pl.int_range(1, conv.height + 1, eager=True)).all()):
            trade_id = pl.lit(day.strftime("%Y%m%d") + "-") + pl.col("id")
    out = conv.select(
        (pl.col("ts") * 1000).cast(pl.Datetime("us", "UTC")),
        "price",
        "size",
        "side",
        trade_id.alias("trade_id"),
        pl.lit(None, dtype=pl.String).alias("tick_direction"),
        pl.lit(None, dtype=pl.Boolean).alias("is_block_trade"),
    )
    return _in_time_order(out)


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
