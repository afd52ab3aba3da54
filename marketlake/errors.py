"""The one error tree of marketlake.

Every exception marketlake raises on purpose derives from :class:`MarketlakeError`. The tree is
grouped by what the *caller* should do about it, not by where it happened::

    MarketlakeError
    ├── ConfigError                 fix the settings / flags, then run again
    ├── DataValidationError         the input is bad; never retried; the message names file/line/field
    │   ├── InvalidSymbolError      a symbol, exchange, category or timeframe outside the allowlist
    │   ├── InvalidTimeframeError
    │   ├── SchemaMismatchError     a frame lacks a column or holds values of the wrong type
    │   └── ImportRejectedError     a CSV (or other import) file was rejected as a whole
    ├── LakeError                   the lake on disk could not do what was asked
    │   ├── LakeWriteError          nothing was published; the lake still holds its previous state
    │   └── CorruptLakeError        a stored file cannot be read; run ``marketlake fsck``
    ├── ExchangeError               talking to the exchange failed
    │   ├── TransientExchangeError  retry later (with backoff)
    │   │   └── RateLimitedError    retry at ``retry_at`` (epoch ms), not before
    │   ├── ExchangeBannedError     HTTP 403: stop *all* requests until ``banned_until``
    │   ├── ExchangeRequestError    the request itself is wrong (e.g. retCode 10001): a caller bug
    │   └── ExchangeProtocolError   a malformed payload: quarantine it and keep running
    │       └── DamagedPayloadError a body cut short or corrupt in transit: fetch it again
    │                               (also a TransientExchangeError, so retry loops take it)
    └── SinkError                   Redis / PostgreSQL trouble; the lake is never affected

Each class has an ``exit_code`` used by the CLI, so scripts can tell the groups apart.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "CorruptLakeError",
    "DamagedPayloadError",
    "DataValidationError",
    "ExchangeBannedError",
    "ExchangeError",
    "ExchangeProtocolError",
    "ExchangeRequestError",
    "ImportRejectedError",
    "InvalidSymbolError",
    "InvalidTimeframeError",
    "LakeError",
    "LakeWriteError",
    "MarketlakeError",
    "MemoryBudgetError",
    "RateLimitedError",
    "SchemaMismatchError",
    "SinkError",
    "TransientExchangeError",
]


class MarketlakeError(Exception):
    """Base of every error marketlake raises on purpose."""

    exit_code: int = 1


class ConfigError(MarketlakeError):
    """The settings (file, environment, flags) are wrong. Fix them and run again."""

    exit_code = 2


class DataValidationError(MarketlakeError, ValueError):
    """The input is bad. Never retried: correct the input named in the message.

    Subclasses ``ValueError`` so that code written against the old system (which raised
    ``ValueError`` for bad data) keeps catching it.
    """

    exit_code = 2


class InvalidSymbolError(DataValidationError):
    """A symbol, exchange or category is not on the allowlist; rejected before any path is built."""


class InvalidTimeframeError(DataValidationError):
    """A timeframe name is not one marketlake knows."""


class SchemaMismatchError(DataValidationError):
    """A frame lacks a required column, or a column holds values of the wrong type or nulls."""


class ImportRejectedError(DataValidationError):
    """An import file was rejected as a whole; nothing of it was stored.

    Attributes:
        path: The rejected file.
        line: 1-based line number of the first offending line, when one is known.
        reason: What is wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class LakeError(MarketlakeError):
    """The lake on disk could not do what was asked."""

    exit_code = 3


class LakeWriteError(LakeError):
    """A write failed; nothing of it was published and the lake keeps its previous state."""


class CorruptLakeError(LakeError):
    """A stored file cannot be read. Run ``marketlake fsck`` (and ``--fix``) to find and remove it.

    Attributes:
        path: The unreadable file.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {reason} (run `marketlake fsck`)")


class MemoryBudgetError(MarketlakeError, MemoryError):
    """A load would not fit the configured memory budget; ask for less or raise the budget.

    Attributes:
        needed_bytes: The estimate for the request.
        budget_bytes: The budget it was compared with.
    """

    exit_code = 2

    def __init__(self, needed_bytes: int, budget_bytes: int, what: str = "request") -> None:
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes
        super().__init__(
            f"{what} needs about {needed_bytes / 2**20:.1f} MiB but the budget is "
            f"{budget_bytes / 2**20:.1f} MiB; narrow the range or use iter_batches()"
        )


class ExchangeError(MarketlakeError):
    """Talking to the exchange failed."""

    exit_code = 4


class TransientExchangeError(ExchangeError):
    """A passing failure (5xx, timeout, busy): retry with backoff."""


class RateLimitedError(TransientExchangeError):
    """The exchange asked us to slow down. Retry at ``retry_at`` (epoch ms), not before.

    Attributes:
        retry_at: Epoch milliseconds at which the limit resets, if the exchange said so.
    """

    def __init__(self, message: str, retry_at: int | None = None) -> None:
        self.retry_at = retry_at
        super().__init__(message)


class ExchangeBannedError(ExchangeError):
    """The exchange banned this IP (HTTP 403). Send nothing until ``banned_until`` (epoch ms).

    Attributes:
        banned_until: Epoch milliseconds when the ban is expected to lift.
    """

    def __init__(self, message: str, banned_until: int) -> None:
        self.banned_until = banned_until
        super().__init__(message)


class ExchangeRequestError(ExchangeError):
    """The request was wrong (e.g. Bybit retCode 10001): a caller bug; retrying will not help."""


class ExchangeProtocolError(ExchangeError):
    """A payload did not match the wire format: quarantine it and keep running."""


class DamagedPayloadError(ExchangeProtocolError, TransientExchangeError):
    """A body arrived cut short or corrupt (a gzip stream that does not verify): fetch it again.

    Both a protocol error (what it is) and a transient one (what to do), so every retry loop
    that retries :class:`TransientExchangeError` retries it.
    """


class SinkError(MarketlakeError):
    """Redis / PostgreSQL trouble. The lake is the truth and is never affected by it."""

    exit_code = 5
