"""The last line of defence of the ``marketlake`` command: any failure becomes one line and a code.

The library raises typed :class:`~marketlake.errors.MarketlakeError` subclasses wherever it knows
what went wrong, and each carries its exit code. What reaches the command untyped (an ``OSError``
from a path the user gave, a full disk under SQLite, a damaged file meeting DuckDB, a config file
nested a million levels deep) is classified here, so a person never sees a traceback and a script
can still tell the groups apart: 2 bad input or settings, 3 lake, 4 exchange, 5 sink, 130 Ctrl-C.
"""

from __future__ import annotations

import errno
import sys

from marketlake.errors import ConfigError, DataValidationError, ExchangeError, LakeError, MarketlakeError

__all__ = ["MAX_MESSAGE_CHARS", "classify", "one_line"]

MAX_MESSAGE_CHARS = 600

# Errors of the storage itself: the disk, not the path someone typed.
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.EFBIG}
)
# Network failures that escape a client's own retry loop (DNS, refused, reset, unreachable).
_NETWORK_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT}
)
# DuckDB exception names that mean "the query is wrong" rather than "a file is damaged".
_SQL_INPUT_ERRORS = frozenset(
    {"ParserException", "BinderException", "CatalogException", "ConversionException", "SyntaxException"}
)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) folded to one space, capped.

    Library messages (DuckDB's caret diagrams, msgspec's paths) may span lines; the CLI's promise
    is one line per failure.
    """
    folded = " ".join(str(text).split())
    if len(folded) > MAX_MESSAGE_CHARS:
        folded = folded[: MAX_MESSAGE_CHARS - 1] + "…"
    return folded


def _os_message(exc: OSError) -> str:
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    if where is not None and exc.filename2 is not None:
        return f"{where} -> {exc.filename2}: {what}"
    return f"{where}: {what}" if where is not None else one_line(exc) or what


def _module_of(exc: BaseException) -> str:
    # DuckDB's exceptions live in its extension module `_duckdb`.
    return type(exc).__module__.split(".", 1)[0].lstrip("_")


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc``.

    Args:
        exc: Anything a command raised (``KeyboardInterrupt`` and ``SystemExit`` are handled by
            the caller).

    Returns:
        ``(exit_code, message)``; the message carries no ``error:`` prefix and no newline.
    """
    if isinstance(exc, MarketlakeError):
        return exc.exit_code, one_line(exc)
    if isinstance(exc, RecursionError):
        return ConfigError.exit_code, "input nested too deeply to read (a config or data file?)"
    if isinstance(exc, MemoryError):
        return DataValidationError.exit_code, "out of memory: ask for less (fewer symbols, a shorter range)"
    if isinstance(exc, TimeoutError):
        # What escapes a client's own timeouts and retries (asyncio, aiohttp): the exchange's.
        return ExchangeError.exit_code, f"network: timed out{': ' + one_line(exc) if str(exc) else ''}"
    if isinstance(exc, OSError):
        # Checked by errno, not by subclass: aiohttp's and asyncio's connection errors are OSErrors.
        if exc.errno in _NETWORK_ERRNOS or _module_of(exc) == "aiohttp":
            return ExchangeError.exit_code, f"network: {one_line(exc)}"
        if exc.errno in _STORAGE_ERRNOS:
            return LakeError.exit_code, one_line(_os_message(exc))
        # Everything else (ENOENT, EACCES, ENOTDIR, EISDIR, ...) is a path someone gave us.
        return DataValidationError.exit_code, one_line(_os_message(exc))
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        # The ledger, the rate budget and the footer cache are SQLite files under the lake's _meta.
        return LakeError.exit_code, f"lake metadata (SQLite): {one_line(exc)}"
    module = _module_of(exc)
    if module == "duckdb":
        if type(exc).__name__ in _SQL_INPUT_ERRORS:
            return DataValidationError.exit_code, f"SQL error: {one_line(exc)}"
        return LakeError.exit_code, f"cannot read the lake: {one_line(exc)} (run `marketlake fsck`)"
    if module in ("pyarrow", "polars"):
        return LakeError.exit_code, f"cannot read the lake: {one_line(exc)} (run `marketlake fsck`)"
    if module == "aiohttp":
        return ExchangeError.exit_code, f"network: {one_line(exc) or type(exc).__name__}"
    # A bug: still one line, but say what it is so it can be reported.
    return 1, f"internal error ({type(exc).__name__}): {one_line(exc)}; please report it"
