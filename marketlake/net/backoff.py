"""Retry delays: capped exponential backoff with full jitter.

"Full jitter" draws each delay uniformly from ``[0, min(cap, base * 2**attempt)]``: retries of many
clients spread out instead of arriving together (AWS architecture blog, "Exponential Backoff And
Jitter"). A server-given earliest retry time (Bybit's ``X-Bapi-Limit-Reset-Timestamp``) is a floor
the jitter never goes below.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


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
