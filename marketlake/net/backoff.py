"""Retry delays: capped exponential backoff with full jitter.

"Full jitter" draws each delay uniformly from ``[0, min(cap, base * 2**attempt)]``: retries of many
clients spread out instead of arriving together (AWS architecture blog, "Exponential Backoff And
Jitter"). A server-given earliest retry time (Bybit's ``X-Bapi-Limit-Reset-Timestamp``) is a floor
the jitter never goes below.

Retry loops built on it (the REST and archive clients) are silent by default; a caller that wants
to show them (the CLI's updating retry line) passes a :data:`RetryObserver`, which gets a
:class:`RetryEvent` before every wait and once when a retried request finally succeeds.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff", "RetryEvent", "RetryObserver", "notify_retry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A request failed and will be sent again, or (``recovered``) a retried one succeeded.

    Attributes:
        context: What was asked, e.g. ``GET /v5/market/time``.
        reason: Why the attempt failed (the error's message); empty when recovered.
        attempt: Attempts that failed so far (1-based); when recovered, the attempt that succeeded.
        max_attempts: Attempts the policy allows in total.
        delay_s: Seconds until the next attempt (0 when recovered).
        next_at_ms: Epoch ms of the next attempt on the replaceable clock (None when recovered).
        recovered: True for the success that ends a run of retries.
    """

    context: str
    reason: str
    attempt: int
    max_attempts: int
    delay_s: float = 0.0
    next_at_ms: int | None = None
    recovered: bool = False


#: Called with each :class:`RetryEvent`; it runs on the retrying task, so it must be quick.
RetryObserver = Callable[[RetryEvent], None]


def notify_retry(observer: RetryObserver | None, event: RetryEvent) -> None:
    """Hand ``event`` to ``observer`` (if any); an observer's failure is logged, never raised: a
    broken progress display must not fail the request it reports on."""
    if observer is None:
        return
    try:
        observer(event)
    except Exception:  # noqa: BLE001
        log.exception("retry observer failed on %s", event)


@dataclass
class Backoff:
    """Delay policy for retries.

    Args:
        base: Upper bound of the first delay, seconds.
        cap: Upper bound of any jittered delay, seconds.
        max_attempts: Attempts in total (the first try included) before giving up.
        rng: Random source; inject ``random.Random(seed)`` for reproducible delays in tests.
    """

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int = 8
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap <= 0:
            raise ValueError("backoff base and cap must be > 0")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        exp = min(attempt - 1, 62)  # 2**62 already dwarfs any cap; avoids huge ints
        return min(self.cap, self.base * float(2**exp))

    def delay(self, attempt: int, not_before_s: float = 0.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Args:
            attempt: How many attempts have failed so far (>= 1).
            not_before_s: A floor from the server (seconds until its reset time); the result is
                never below it, even beyond ``cap``.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        return max(self.rng.uniform(0.0, self.ceiling(attempt)), not_before_s, 0.0)

    def gives_up_after(self, attempt: int) -> bool:
        """True when ``attempt`` failed attempts exhaust the policy."""
        return attempt >= self.max_attempts
