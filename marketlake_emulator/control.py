"""The emulator's knobs: its clock, its fault configuration, and the log of what it served.

Tests drive these objects directly (``emu.control.faults.p_429 = 0.2``,
``emu.control.schedule("10006", "truncated")``, ``emu.control.clock.set_speed(3600)``); a running
``marketlake serve`` exposes the same through the ``/_emulator/*`` admin routes.

Two clocks are at play and never mix:

* **market time** (:class:`EmulatorClock`): what ``/v5/market/time`` and every envelope's ``time``
  say; ``start + elapsed * speed``, so tests can run hours of market in seconds;
* **real time** (``time.monotonic``): rate-limit windows, bans and slow responses, because they
  are about how fast a client really sends. A ``X-Bapi-Limit-Reset-Timestamp`` is therefore
  written as the envelope ``time`` plus the real wait, so ``reset - time`` is always the delay.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = [
    "FAULT_KINDS",
    "EmulatorClock",
    "EmulatorControl",
    "FaultConfig",
    "RequestLog",
    "RequestRecord",
    "SlidingWindow",
]

#: Faults a request can be given, by name (``schedule`` and the ``p_*`` knobs use these).
FAULT_KINDS: Final = ("403", "429", "5xx", "10016", "10006", "truncated", "slow", "disconnect")


class EmulatorClock:
    """Market time: ``start_ms + (monotonic elapsed) * speed``; ``speed=0`` freezes it.

    Args:
        start_ms: Market time at creation (default: the real time now).
        speed: Market milliseconds per real millisecond.
        monotonic: Source of real seconds (replaceable in tests).
    """

    def __init__(
        self,
        start_ms: int | None = None,
        speed: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._mono = monotonic
        self._origin_ms = float(time.time_ns() // 1_000_000 if start_ms is None else start_ms)
        self._t0 = monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        """Market milliseconds per real millisecond."""
        return self._speed

    def now_ms(self) -> int:
        """Current market time, epoch ms."""
        return int(self._origin_ms + (self._mono() - self._t0) * 1000.0 * self._speed)

    def set_time(self, ms: int) -> None:
        """Jump market time to ``ms`` (keeps the speed)."""
        self._origin_ms, self._t0 = float(ms), self._mono()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on (market time does not jump)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._origin_ms, self._t0 = float(self.now_ms()), self._mono()
        self._speed = float(speed)

    def advance(self, ms: int) -> None:
        """Move market time forward by ``ms``."""
        if ms < 0:
            raise ValueError("market time cannot go backwards")
        self._origin_ms += ms


@dataclass
class FaultConfig:
    """What the emulator does wrong, and when. Every field may be changed while it runs.

    Attributes:
        window_seconds: Length of the rate-limit window in real seconds (Bybit: 5; tests shrink it).
        ip_limit: Requests per window before the IP is banned (HTTP 403); None = no limit.
        ip_ban_seconds: How long an IP ban lasts, real seconds.
        api_limit: Served requests per window before answering retCode 10006 with a reset header;
            None = no limit.
        p_403: Probability that a request triggers a ban (HTTP 403).
        p_429: Probability of HTTP 429 (system-level frequency protection).
        p_5xx: Probability of HTTP ``status_5xx``.
        p_10016: Probability of retCode 10016 (server error).
        p_10006: Probability of retCode 10006 regardless of the limit.
        p_truncated: Probability that a JSON body is cut in half.
        p_slow: Probability that a response is delayed by ``slow_seconds``.
        p_disconnect: Probability that the connection is closed without an answer.
        slow_seconds: Delay of a slow response, real seconds.
        status_5xx: Status code of a 5xx fault.
        paths: Paths the random/scheduled faults apply to (None: every ``/v5`` path). Limits and
            bans always apply to every path.
    """

    window_seconds: float = 5.0
    ip_limit: int | None = None
    ip_ban_seconds: float = 600.0
    api_limit: int | None = None
    p_403: float = 0.0
    p_429: float = 0.0
    p_5xx: float = 0.0
    p_10016: float = 0.0
    p_10006: float = 0.0
    p_truncated: float = 0.0
    p_slow: float = 0.0
    p_disconnect: float = 0.0
    slow_seconds: float = 1.0
    status_5xx: int = 503
    paths: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` on an out-of-range knob."""
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        for name in ("ip_limit", "api_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be within [0, 1]")
        if self.ip_ban_seconds < 0 or self.slow_seconds < 0:
            raise ValueError("durations must be >= 0")
        if not 500 <= self.status_5xx <= 599:
            raise ValueError("status_5xx must be 500..599")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator received.

    Attributes:
        wall_ms: Real wall-clock time of arrival, epoch ms (comparable with the system clock).
        mono: Real monotonic seconds of arrival.
        server_ms: Market time of arrival.
        path: URL path.
        params: Query parameters.
        status: HTTP status answered (0 when the connection was dropped).
        ret_code: ``retCode`` answered, when a JSON envelope was sent.
        fault: Name of the fault injected, if any (``"limit-10006"``/``"limit-403"`` for limits).
    """

    wall_ms: float
    mono: float
    server_ms: int
    path: str
    params: dict[str, str]
    status: int
    ret_code: int | None
    fault: str | None


@dataclass
class RequestLog:
    """Everything the emulator answered on ``/v5`` paths, in arrival order."""

    records: list[RequestRecord] = field(default_factory=list)

    def append(self, record: RequestRecord) -> None:
        """Add a record."""
        self.records.append(record)

    def clear(self) -> None:
        """Forget everything."""
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def select(
        self, *, path: str | None = None, status: int | None = None, fault: str | None = None
    ) -> list[RequestRecord]:
        """Records matching every given filter."""
        return [
            r
            for r in self.records
            if (path is None or r.path == path)
            and (status is None or r.status == status)
            and (fault is None or r.fault == fault)
        ]

    def max_in_window(
        self, window_seconds: float = 5.0, records: Iterable[RequestRecord] | None = None
    ) -> int:
        """The largest number of requests that arrived within any ``window_seconds`` (real time)."""
        times = sorted(r.mono for r in (self.records if records is None else records))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_seconds:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


class SlidingWindow:
    """Arrival times within the last ``window`` seconds (real, monotonic)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def prune(self, now: float, window: float) -> None:
        """Drop times older than ``now - window``."""
        while self._times and self._times[0] <= now - window:
            self._times.popleft()

    def count(self, now: float, window: float) -> int:
        """Number of times within ``(now - window, now]``."""
        self.prune(now, window)
        return len(self._times)

    def add(self, now: float) -> None:
        """Record an arrival at ``now``."""
        self._times.append(now)

    def frees_in(self, now: float, window: float, limit: int) -> float:
        """Seconds until fewer than ``limit`` times remain in the window."""
        self.prune(now, window)
        excess = len(self._times) - limit
        if excess < 0:
            return 0.0
        return max(0.0, self._times[excess] + window - now)


class EmulatorControl:
    """The emulator's knobs and records, shared by its request handlers.

    Args:
        faults: Initial fault configuration.
        clock: Market clock.
        seed: Seed of the random faults (deterministic for a given request order).
    """

    def __init__(self, faults: FaultConfig, clock: EmulatorClock, seed: int = 0) -> None:
        self.faults = faults
        self.clock = clock
        self.log = RequestLog()
        self.ip_window = SlidingWindow()
        self.api_window = SlidingWindow()
        self._schedule: deque[str] = deque()
        self._rng = random.Random(f"{seed}:faults")
        self._banned_until = 0.0  # monotonic seconds
        self.ban_count = 0

    def record(
        self,
        mono: float,
        wall: float,
        server_ms: int,
        path: str,
        params: dict[str, str],
        status: int,
        ret_code: int | None,
        fault: str | None,
    ) -> None:
        """Append one served request to :attr:`log` (every route logs through here)."""
        self.log.append(RequestRecord(wall, mono, server_ms, path, params, status, ret_code, fault))

    # ------------------------------------------------------------------ faults

    def configure(self, **changes: Any) -> None:
        """Set fault knobs by name, validated (``configure(p_429=0.1, api_limit=100)``).

        Raises:
            ValueError: an unknown knob or an out-of-range value (nothing is changed then).
        """
        known = {f.name for f in fields(FaultConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(sorted(unknown))}")
        if "paths" in changes and changes["paths"] is not None:
            changes["paths"] = frozenset(changes["paths"])
        candidate = FaultConfig(
            **{**{f.name: getattr(self.faults, f.name) for f in fields(FaultConfig)}, **changes}
        )
        for name in changes:
            setattr(self.faults, name, getattr(candidate, name))

    def schedule(self, *kinds: str) -> None:
        """Give the next requests (on fault paths) these faults, one each, in order; ``"ok"``
        passes one request untouched.

        Raises:
            ValueError: an unknown fault name.
        """
        for kind in kinds:
            if kind not in FAULT_KINDS and kind != "ok":
                raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}, ok")
        self._schedule.extend(kinds)

    @property
    def scheduled(self) -> list[str]:
        """Faults still waiting in the schedule."""
        return list(self._schedule)

    def clear_schedule(self) -> None:
        """Drop every scheduled fault."""
        self._schedule.clear()

    def draw_fault(self, path: str) -> str | None:
        """The fault for one request on ``path``: the schedule first, then the probabilities."""
        paths = self.faults.paths
        if paths is not None and path not in paths:
            return None
        if self._schedule:
            kind = self._schedule.popleft()
            return None if kind == "ok" else kind
        f = self.faults
        for kind, p in (
            ("403", f.p_403),
            ("disconnect", f.p_disconnect),
            ("429", f.p_429),
            ("5xx", f.p_5xx),
            ("10016", f.p_10016),
            ("10006", f.p_10006),
            ("truncated", f.p_truncated),
            ("slow", f.p_slow),
        ):
            if p > 0.0 and self._rng.random() < p:
                return kind
        return None

    # ------------------------------------------------------------------ bans

    def ban(self, seconds: float | None = None) -> None:
        """Ban the (only) client IP now for ``seconds`` (default ``faults.ip_ban_seconds``)."""
        duration = self.faults.ip_ban_seconds if seconds is None else seconds
        self._banned_until = time.monotonic() + duration
        self.ban_count += 1

    def unban(self) -> None:
        """Lift a ban at once."""
        self._banned_until = 0.0

    def is_banned(self, mono: float | None = None) -> bool:
        """True while a ban is in force."""
        return (time.monotonic() if mono is None else mono) < self._banned_until

    @property
    def ban_remaining_seconds(self) -> float:
        """Real seconds until the ban lifts (0 when none)."""
        return max(0.0, self._banned_until - time.monotonic())

    # ------------------------------------------------------------------ clock

    def set_clock(self, *, time_ms: int | None = None, speed: float | None = None) -> None:
        """Jump market time and/or change its speed."""
        if speed is not None:
            self.clock.set_speed(speed)
        if time_ms is not None:
            self.clock.set_time(time_ms)
