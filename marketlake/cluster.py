"""Batch work on a Dask cluster: archive ingest, candles from stored trades, and ``check``.

The work is split into independent tasks, each run by a worker process:

* archive: one task per (symbol, day) to download (and per day whose candles are built from
  trades already stored); the worker downloads, parses and writes the day and builds the
  sub-minute candles asked for (:meth:`~marketlake.ingest.archive.ArchiveIngest.settle`);
* build-candles: one task per (symbol, day) (:func:`~marketlake.ingest.build.build_day`);
* check: one task per series (:func:`~marketlake.quality.check.check_one`).

What runs where: the client (this process) plans from the ledger, asks the archive's index once
per symbol (and settles the days it does not list, as the single-process run does), records the
run in the ledger with a heartbeat, submits the tasks, follows them with
``distributed.as_completed`` (a ``progress(done, total)`` callback) and adds the results up into
the very object the single-process run returns (:class:`~marketlake.ingest.archive.ArchiveStats`,
:class:`~marketlake.ingest.build.BuildStats`, :class:`~marketlake.quality.check.LakeCheck`).
A task gets the lake root as a string and the :class:`~marketlake.settings.Settings`, and uses
its worker's :class:`~marketlake.store.Lake` (opened by the first task, kept); it commits through the store like any other writer
process (optimistic per-partition commits), then records the ledger. So a task killed at any
moment leaves at most an orphan file, Dask runs it again elsewhere, and the re-run commits only
what is missing (a re-written day commits nothing new).

Clusters: ``local:N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker
processes on this machine and closes it afterwards; ``tcp://HOST:PORT`` connects to a running
scheduler, whose workers must have marketlake installed and see the same lake root (a shared
filesystem, or an object store). Bad values, and a scheduler that does not answer within
:data:`CONNECT_TIMEOUT_S`, are :class:`~marketlake.errors.ConfigError` (exit status 2: fix the
flag); so is a task that kept killing its workers. ``dask``/``distributed`` are imported only
when a cluster is opened: ``--help`` never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from marketlake.errors import (
    ConfigError,
    DataValidationError,
    ExchangeError,
    LakeError,
    MarketlakeError,
    SinkError,
)

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from marketlake.core.timeframes import Timeframe
    from marketlake.ingest.archive import ArchiveStats, SymbolPlan
    from marketlake.ingest.build import BuildPlan, BuildStats, DayBuild
    from marketlake.quality.check import LakeCheck, SeriesCheck
    from marketlake.quality.perp import PerpSeriesCheck
    from marketlake.settings import Settings
    from marketlake.store import Lake
    from marketlake.store.layout import SeriesId

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_LOCAL_WORKERS",
    "ClusterSpec",
    "archive_on_cluster",
    "build_candles_on_cluster",
    "check_on_cluster",
    "day_major",
    "open_client",
    "parse_cluster",
    "run_tasks",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int, int], None]

#: Most worker processes ``local:N`` starts.
MAX_LOCAL_WORKERS = 64
#: Seconds a scheduler has to answer before ``--scheduler`` is called unreachable.
CONNECT_TIMEOUT_S = 10.0

_LOCAL = re.compile(r"local:(\d{1,6})")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where batch work runs: ``workers`` local processes, or the scheduler at ``address``.

    Attributes:
        workers: Worker processes of a local cluster (``local:N``), else None.
        address: ``tcp://HOST:PORT`` of a running scheduler, else None.
    """

    workers: int | None = None
    address: str | None = None

    @property
    def is_local(self) -> bool:
        """True for a cluster started on this machine (and closed afterwards)."""
        return self.workers is not None

    def describe(self) -> str:
        """``local:N`` or the scheduler's address (for messages and the run record)."""
        return f"local:{self.workers}" if self.workers is not None else str(self.address)


def parse_cluster(spec: str | None, scheduler: str | None) -> ClusterSpec | None:
    """The cluster the ``--cluster`` / ``--scheduler`` flags ask for; None for neither (the
    work then runs in this process, as without a cluster).

    Args:
        spec: ``local:N``, N worker processes on this machine (1..:data:`MAX_LOCAL_WORKERS`).
        scheduler: ``tcp://HOST:PORT`` of a running Dask scheduler.

    Raises:
        ConfigError: both given, or a value of the wrong form (exit status 2).
    """
    if spec is not None and scheduler is not None:
        raise ConfigError("give --cluster or --scheduler, not both")
    if spec is not None:
        m = _LOCAL.fullmatch(spec.strip())
        if m is None or not 1 <= int(m.group(1)) <= MAX_LOCAL_WORKERS:
            raise ConfigError(
                f"--cluster must be local:N, N worker processes on this machine (1..{MAX_LOCAL_WORKERS}), "
                f"got {spec[:40]!r}; for a running scheduler use --scheduler tcp://HOST:PORT"
            )
        return ClusterSpec(workers=int(m.group(1)))
    if scheduler is not None:
        return ClusterSpec(address=_scheduler_address(scheduler))
    return None


def _scheduler_address(text: str) -> str:
    bad = ConfigError(f"--scheduler must be tcp://HOST:PORT (a running Dask scheduler), got {text[:60]!r}")
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise bad from None
    if parts.scheme != "tcp" or not parts.hostname or port is None or not 1 <= port <= 65535:
        raise bad
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise bad
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port}"


def _probe(address: str, timeout_s: float) -> None:
    """Fail at once, in one line, when nothing listens at ``address`` (Dask itself would retry
    a refused connection until its timeout)."""
    parts = urlsplit(address)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConfigError(
            f"no Dask scheduler answers at {address} ({why}); start one (`dask scheduler`) or fix --scheduler"
        ) from None


@contextlib.contextmanager
def open_client(spec: ClusterSpec, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Client]:
    """A :class:`distributed.Client` of the cluster ``spec`` names, closed (and a local cluster
    shut down, its workers with it) when the block ends, also on an error or Ctrl-C.

    Raises:
        ConfigError: the scheduler does not answer within ``connect_timeout_s``.
    """
    from distributed import Client, LocalCluster

    if spec.workers is not None:
        cluster = LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # The scheduler serves HTTP (health, metrics) even without a dashboard, by default on
            # port 8787, with a warning when another cluster holds it: a free loopback port.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            # Worker restarts and shutdown chatter are not the command's output; errors still are.
            silence_logs=logging.ERROR,
        )
        try:
            client = Client(cluster, set_as_default=False)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
        return
    assert spec.address is not None
    _probe(spec.address, connect_timeout_s)
    try:
        client = Client(spec.address, timeout=connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"no Dask scheduler answers at {spec.address} ({' '.join(str(exc).split())[:160]}); "
            "start one (`dask scheduler`) or fix --scheduler"
        ) from None
    try:
        yield client
    finally:
        client.close()


# ---------------------------------------------------------------------------------- tasks


class _TaskFailed(Exception):
    """A typed marketlake error of a task, carried back as its exit code and message (an error
    class whose constructor takes other arguments than its message would not unpickle)."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(exit_code, message)
        self.exit_code = exit_code
        self.message = message


_BY_EXIT_CODE: dict[int, type[MarketlakeError]] = {
    2: DataValidationError, 3: LakeError, 4: ExchangeError, 5: SinkError,
}


def _guarded(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a worker; a marketlake error travels back as :class:`_TaskFailed`."""
    try:
        return fn(*args)
    except MarketlakeError as exc:
        raise _TaskFailed(exc.exit_code, str(exc)) from None


def run_tasks(
    client: Client,
    fn: Callable[..., T],
    tasks: Sequence[tuple[Any, ...]],
    *,
    name: str = "task",
    progress: Progress | None = None,
    priorities: Sequence[int] | None = None,
) -> list[T]:
    """Run ``fn(*args)`` for each ``args`` of ``tasks`` on the cluster; return the results in
    the order of ``tasks``.

    ``priorities`` (one per task, higher first; default: the order of ``tasks``) decide which
    tasks the workers get first.

    ``progress(done, total)`` is called with ``(0, total)`` and as each task completes. A task
    whose worker dies is run again by Dask on another worker; one that killed its workers
    ``distributed.scheduler.allowed-failures`` times (default 3) fails the run. Tasks not yet
    done are cancelled when the run fails or is interrupted.

    Raises:
        ConfigError: a task kept killing its workers, or the scheduler was lost.
        MarketlakeError: a task raised one (same exit code and message).
    """
    from distributed import as_completed

    total = len(tasks)
    if progress is not None:
        progress(0, total)
    if not total:
        return []
    futures = [
        client.submit(_guarded, fn, *args, pure=False, key=f"{name}-{i}-{uuid.uuid4().hex[:12]}",
                      priority=0 if priorities is None else priorities[i])
        for i, args in enumerate(tasks)
    ]
    where = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * total
    finished = False
    try:
        for done, fut in enumerate(as_completed(futures, loop=client.loop), 1):
            try:
                results[where[fut.key]] = fut.result()
            except _TaskFailed as exc:
                raise _BY_EXIT_CODE.get(exc.exit_code, MarketlakeError)(exc.message) from None
            except Exception as exc:
                raise _cluster_failure(exc, name, client) from None
            if progress is not None:
                progress(done, total)
        finished = True
    finally:
        if not finished:
            with contextlib.suppress(Exception):
                client.cancel(futures)
    return results


def day_major(days: Sequence[dt.date], first: Sequence[bool] | None = None) -> list[int]:
    """Priorities that hand out the tasks of ``days`` (one per task, in plan order: symbol by
    symbol) day by day, all symbols of a day before the next day; tasks marked ``first`` before
    all others.

    Tasks running at the same time then write different series, so they never compete for one
    partition (the 15s and 1m candles of a month share one): in symbol order two workers would
    commit days of one month side by side and one of them would re-merge and retry every time.
    """
    early = first if first is not None else [False] * len(days)
    rank = sorted(range(len(days)), key=lambda i: (not early[i], days[i], i))
    out = [0] * len(days)
    for r, i in enumerate(rank):
        out[i] = -r
    return out


def _cluster_failure(exc: Exception, name: str, client: Client) -> Exception:
    """The error to raise for ``exc`` from a task's future: the cluster's own failures become a
    one-line :class:`ConfigError`, anything else (a bug in a task) is raised as it is."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return ConfigError(
            f"cluster: a {name} task killed its worker process each time it ran (out of memory? give the "
            "workers more memory); what was committed stays, a re-run does the rest"
        )
    module = type(exc).__module__.split(".", 1)[0]
    if isinstance(exc, (OSError, TimeoutError, asyncio.CancelledError)) or module == "distributed":
        where = getattr(client, "scheduler", None)
        address = getattr(where, "address", "") if where is not None else ""
        why = " ".join(str(exc).split())[:160]
        return ConfigError(
            f"cluster: lost the Dask scheduler {address}: {type(exc).__name__}: {why}; "
            "what was committed stays, a re-run does the rest"
        )
    return exc


def _lake(root: str, settings: Settings) -> Lake:
    from marketlake.store import Lake

    return Lake(root, settings=settings)


_worker_lakes: dict[tuple[str, bytes, int], Lake] = {}


def _worker_lake(root: str, settings: Settings) -> Lake:
    """The lake of a task: one per worker process (and thread), kept across its tasks, so a task
    does not pay for opening the table state and the ledger again (~a third of a small task's
    time). Safe: a Lake follows the newest version on every read and commit."""
    import msgspec

    key = (root, msgspec.json.encode(settings), threading.get_ident())
    lake = _worker_lakes.get(key)
    if lake is None:
        lake = _worker_lakes[key] = _lake(root, settings)
    return lake


def _archive_task(
    root: str, settings: Settings, sid: SeriesId, day: dt.date, from_stored: bool,
    candles: tuple[str, ...], run_id: str,
) -> ArchiveStats:
    """Worker: settle one archive day (download, parse, write, candles; or candles from the
    stored trades) into a fresh :class:`ArchiveStats`."""
    from marketlake.core.timeframes import parse_timeframe
    from marketlake.exchanges.bybit.archive import BybitArchiveClient
    from marketlake.ingest.archive import ArchiveIngest

    lake = _worker_lake(root, settings)

    async def work() -> ArchiveStats:
        async with BybitArchiveClient(settings.archive_url) as client:
            runner = ArchiveIngest(lake, client, concurrency=1, candles=[parse_timeframe(t) for t in candles])
            runner.run_id = run_id
            await runner.settle(sid, day, from_stored=from_stored)
            st = runner.stats
            st.requests, st.retries = client.stats.requests, client.stats.retries
            st.bytes_downloaded = client.stats.bytes_downloaded
            return st

    return asyncio.run(work())


def _build_task(
    root: str, settings: Settings, sid: SeriesId, day: dt.date, timeframes: tuple[str, ...], run_id: str
) -> DayBuild:
    """Worker: build, write and record one day's candles from its stored trades."""
    from marketlake.core.timeframes import parse_timeframe
    from marketlake.ingest.build import build_day

    return build_day(_worker_lake(root, settings), sid, day, [parse_timeframe(t) for t in timeframes], run_id=run_id)


def _check_task(
    root: str, settings: Settings, kind: str, sid: SeriesId, consistency: bool
) -> SeriesCheck | PerpSeriesCheck:
    """Worker: check one series."""
    from marketlake.quality.check import check_one

    return check_one(_worker_lake(root, settings), kind, sid, consistency=consistency)


# ------------------------------------------------------------------------- run records


@dataclass(slots=True)
class _Run:
    run_id: str
    status: str = "failed"
    stats: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _recorded(lake: Lake, root: str, settings: Settings, kind: str, args: dict[str, Any]) -> Iterator[_Run]:
    """A run record in the ledger, owned by this process, with a heartbeat from a thread (the
    client waits on the cluster, so no loop of its own beats); closed with the body's status."""
    from marketlake.store.ledger import RUN_HEARTBEAT_S

    run = _Run(lake.ledger.start_run(kind, args))
    stop = threading.Event()

    def beat() -> None:
        own = _lake(root, settings)  # an SQLite connection belongs to the thread that opened it
        while not stop.wait(RUN_HEARTBEAT_S):
            try:
                own.ledger.heartbeat(run.run_id)
            except sqlite3.Error as exc:
                log.warning("heartbeat of run %s not recorded: %s", run.run_id, exc)

    thread = threading.Thread(target=beat, name="marketlake-heartbeat", daemon=True)
    thread.start()
    try:
        yield run
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    finally:
        stop.set()
        thread.join(5)
        lake.ledger.finish_run(run.run_id, run.status, run.stats)


# ------------------------------------------------------------------------------ archive

_SUMMED = (
    "days_fetched", "days_empty", "days_unpublished", "days_failed", "days_rebuilt", "trades_new",
    "trades_replaced", "trades_unchanged", "trades_deleted", "candles_written", "bytes_downloaded",
    "requests", "retries", "parse_seconds", "write_seconds",
)


def _merge_archive(into: ArchiveStats, part: ArchiveStats) -> None:
    for name in _SUMMED:
        setattr(into, name, getattr(into, name) + getattr(part, name))
    into.failures.extend(part.failures)
    into.notices.extend(part.notices)


def archive_on_cluster(
    client: Client,
    root: str,
    settings: Settings,
    symbols: Sequence[str],
    *,
    category: str,
    start: dt.date,
    end: dt.date,
    today: dt.date | None = None,
    candles: Sequence[Timeframe] = (),
    progress: Progress | None = None,
) -> tuple[list[SymbolPlan], ArchiveStats]:
    """:func:`~marketlake.ingest.archive.run_archive_ingest` with each day a task on the cluster.

    The client plans, reads each symbol's index (from ``settings.archive_url``) and settles the
    days it does not list; the workers download, store and record the listed days (and build
    the ``candles`` of days whose trades are stored). The stats add up to what the
    single-process run reports (times are sums over the workers; ``elapsed`` is the wall time).

    ``progress(done, total)`` counts the tasks (days dispatched to the cluster).
    """
    from marketlake.clock import get_clock
    from marketlake.exchanges.bybit.archive import BybitArchiveClient
    from marketlake.ingest.archive import ArchiveIngest, plan_archive

    t0 = time.monotonic()
    lake = _lake(root, settings)
    if today is None:
        today = dt.datetime.fromtimestamp(get_clock().now_ms() / 1000, dt.UTC).date()
    tfs = tuple(candles)
    plans = plan_archive(lake, symbols, category=category, start=start, end=end, today=today, candles=tfs)
    args = {
        "symbols": list(symbols), "candles": [t.name for t in tfs], "category": category,
        "start": start.isoformat(), "end": end.isoformat(),
    }
    names = tuple(t.name for t in tfs)
    with _recorded(lake, root, settings, "archive", {**args, "cluster": _describe(client)}) as run:

        async def triage() -> tuple[ArchiveStats, list[tuple[Any, ...]]]:
            async with BybitArchiveClient(settings.archive_url) as archive:
                runner = ArchiveIngest(lake, archive, candles=tfs, run_args=args)
                runner.run_id = run.run_id
                st = runner.stats
                st.symbols = len(plans)
                st.days_planned = sum(len(p.days) + len(p.rebuild) for p in plans)
                # Candles of stored days need no index and no download: dispatched first.
                todo: list[tuple[Any, ...]] = [
                    (root, settings, p.sid, day, True, names, run.run_id) for p in plans for day in p.rebuild
                ]
                for p in plans:
                    if p.days:
                        todo += [(root, settings, sid, day, False, names, run.run_id)
                                 for sid, day in await runner.triage(p)]
                st.requests, st.retries = archive.stats.requests, archive.stats.retries
                st.bytes_downloaded = archive.stats.bytes_downloaded
                return st, todo

        stats, todo = asyncio.run(triage())
        order = day_major([t[3] for t in todo], [t[4] for t in todo])
        try:
            parts = run_tasks(client, _archive_task, todo, name="archive-day", progress=progress, priorities=order)
            for part in parts:
                _merge_archive(stats, part)
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            stats.elapsed = time.monotonic() - t0
            run.stats = stats.to_dict()
        run.status = "partial" if stats.failures or stats.days_failed else "ok"
    return plans, stats


def _describe(client: Client) -> str:
    info = getattr(client, "scheduler", None)
    return str(getattr(info, "address", "") or "dask")


# ------------------------------------------------------------------------ build-candles


def build_candles_on_cluster(
    client: Client,
    root: str,
    settings: Settings,
    symbols: Sequence[str],
    timeframes: str | Sequence[str] | Sequence[Timeframe],
    *,
    start: dt.date,
    end: dt.date,
    category: str | None = None,
    exchange: str | None = None,
    today: dt.date | None = None,
    progress: Progress | None = None,
) -> tuple[list[BuildPlan], BuildStats]:
    """:func:`~marketlake.ingest.build.build_candles` with each (symbol, day) a task on the
    cluster; the same plan, the same stats (``elapsed``: the wall time)."""
    from marketlake.ingest.build import new_stats, plan_build, run_args, timeframes_of

    t0 = time.monotonic()
    lake = _lake(root, settings)
    tfs = timeframes_of(timeframes)
    category = category or settings.category
    exchange = exchange or settings.exchange
    plans = plan_build(lake, symbols, category=category, start=start, end=end, exchange=exchange, today=today)
    stats = new_stats(plans, category)
    names = tuple(t.name for t in tfs)
    args = {**run_args(symbols, tfs, category, start, end), "cluster": _describe(client)}
    with _recorded(lake, root, settings, "build-candles", args) as run:
        todo = [(root, settings, p.sid, day, names, run.run_id) for p in plans for day in p.days]
        order = day_major([t[3] for t in todo])
        try:
            days = run_tasks(client, _build_task, todo, name="build-day", progress=progress, priorities=order)
            for day in days:
                stats.add(day)
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            stats.elapsed = time.monotonic() - t0
            run.stats = stats.to_dict()
        run.status = "partial" if stats.days_failed else "ok"
    return plans, stats


# -------------------------------------------------------------------------------- check


def check_on_cluster(
    client: Client,
    root: str,
    settings: Settings,
    symbols: str | Sequence[str] | None = None,
    timeframes: str | Sequence[str] | None = None,
    *,
    exchange: str | None = None,
    category: str | None = None,
    consistency: bool = True,
    progress: Progress | None = None,
    data: str | Sequence[str] | None = None,
) -> LakeCheck:
    """:func:`~marketlake.quality.check.check_lake` with each series a task on the cluster; the
    same :class:`~marketlake.quality.check.LakeCheck` (series in the same order; ``seconds``:
    the wall time)."""
    from marketlake.quality.check import LakeCheck, finish_check, plan_check

    t0 = time.perf_counter()
    lake = _lake(root, settings)
    plan = plan_check(lake, symbols, timeframes, exchange=exchange, category=category, data=data)
    todo = [(root, settings, kind, sid, consistency) for kind, sid in plan.items]
    out = LakeCheck()
    results = run_tasks(client, _check_task, todo, name="check", progress=progress)
    for (kind, _), result in zip(plan.items, results):
        out.add(kind, result)
    finish_check(lake, out, plan, symbols=symbols, exchange=exchange, category=category)
    out.seconds = time.perf_counter() - t0
    return out
