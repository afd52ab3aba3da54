"""``marketlake ingest`` and ``marketlake serve``: flags in, library calls, rendered results out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional, TypeVar

import typer

from marketlake.cli.app import (
    CategoryOpt,
    ConfigOpt,
    EndOpt,
    JsonOpt,
    LakeOpt,
    StartOpt,
    SymbolsOpt,
    app,
    load_settings,
)
from marketlake.cli.feedback import RetryLine, exit_interrupted
from marketlake.cli.params import BoundedFloat, BoundedInt
from marketlake.cli.render import console, err_console, print_json
from marketlake.core.timeutil import ms_to_text, to_ms
from marketlake.errors import DataValidationError, InvalidSymbolError
from marketlake.settings import Settings

# The ingest machinery pulls in aiohttp, polars, pyarrow and duckdb: imported inside the commands,
# so `marketlake --help` does not pay for them.
if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress

    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.ingest.historical import IngestStats
    from marketlake.ingest.live_types import LiveConfig
    from marketlake.ingest.planner import Plan
    from marketlake.ingest.service import IngestOutcome, IngestRequest
    from marketlake.net.ratelimit import RateBudget
    from marketlake.store import Lake

T = TypeVar("T")

BaseUrlOpt = Annotated[
    Optional[str],
    typer.Option("--base-url", help="Bybit REST base URL (default: mainnet; the emulator's URL for tests)."),
]


def run_async(coro: Awaitable[T]) -> T:
    """Run ``coro``; SIGTERM cancels it like Ctrl-C does, so runners flush and exit cleanly."""

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None

    return asyncio.run(main())


class _ProgressView:
    """A rich progress bar on a terminal; a plain line every few seconds otherwise.

    While the bar is up it also shows the latest retry (``retries``' sink): a separate stderr
    line redrawn under a live bar would garble both. It keeps the last figures it was given:
    after a Ctrl-C they are what is committed (the runner's final flush updates them in place).
    """

    def __init__(self, enabled: bool, retries: RetryLine | None = None) -> None:
        self.tty = enabled and sys.stdout.isatty()
        self.enabled = enabled
        self.retries = retries
        self.stats: IngestStats | None = None
        self._bar: Progress | None = None
        self._task = None
        self._last = 0.0
        self._retry_text = ""

    def plan(self, plan: Plan) -> None:
        if not self.enabled:
            return
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} requests"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=console,
            )
            if self.retries is not None:
                self.retries.clear()
                self.retries.sink = self._note_retry
            self._bar.start()
            self._task = self._bar.add_task("ingest", total=max(1, plan.requests), info="")

    def _note_retry(self, text: str | None) -> None:
        self._retry_text = "" if text is None else f" | {text}"
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, info=self._info())

    def _info(self) -> str:
        st = self.stats
        if st is None:
            return self._retry_text.lstrip(" |")
        return (
            f"{st.series_done}/{st.series} series, {st.rows_fetched:,} rows, {st.requests_per_s:.0f} req/s"
            + self._retry_text
        )

    def update(self, st: IngestStats) -> None:
        self.stats = st  # also with the display off: the Ctrl-C line reports from it
        if not self.enabled:
            return
        info = self._info()
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=st.pages + st.failed_windows, info=info)
        elif time.monotonic() - self._last >= 5.0:
            self._last = time.monotonic()
            console.print(f"ingest: {st.pages}/{st.requests_planned} requests, {info}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.retries is not None:
            self.retries.sink = None
            self.retries.clear()


def _interrupted_ingest(st: IngestStats | None) -> NoReturn:
    """Ctrl-C: say what is committed (the runner flushed what it had fetched) and exit 130."""
    if st is None or not (st.pages or st.failed_windows):
        exit_interrupted("before any window was fetched; nothing new is stored; a re-run starts it")
    committed = st.rows_new + st.rows_replaced + st.rows_unchanged
    exit_interrupted(
        f"{committed:,} rows of {st.pages:,}/{st.requests_planned:,} windows committed "
        f"({st.rows_new:,} new; {st.series_done}/{st.series} series complete); "
        "run the same command again to fetch only the rest"
    )


def _render_plan(plan: Plan, settings: Settings, as_json: bool) -> None:
    if as_json:
        print_json(plan.to_dict(settings.rate_limit_per_5s))
        return
    from marketlake.ingest.planner import series_label

    for sp in plan.series:
        if sp.requests:
            what = "candles" if sp.sid.dataset.endswith("candles") else "rows"
            console.print(
                f"{series_label(sp.sid):<40} {ms_to_text(sp.start_ms)} .. {ms_to_text(sp.end_ms)}  "
                f"{sp.requests:>6} requests  {sp.candles:>10,} {what}"
            )
    eta = plan.eta_seconds(settings.rate_limit_per_5s)
    console.print(
        f"plan: {len(plan.series)} series, {plan.requests:,} requests, up to {plan.candles:,} candles, "
        f"about {eta:,.1f} s at {settings.rate_limit_per_5s} requests / 5 s"
    )


def _render_outcome(out: IngestOutcome, as_json: bool) -> None:
    st = out.stats
    if as_json:
        print_json(
            {
                "ok": out.ok,
                "unknown_symbols": out.unknown_symbols,
                "unexplained_gaps": {k: [[a, b] for a, b in v] for k, v in out.unexplained_gaps.items()},
                "stats": st.to_dict() if st else None,
                "plan": {"requests": out.plan.requests, "candles": out.plan.candles},
                "notes": out.notes,
            }
        )
        return
    for note in out.notes:
        err_console.print(f"note: {note}", markup=False)
    # Unknown symbols are reported once, as the command's error (see _fail_on_unknown).
    if st is None or (out.unknown_symbols and not out.plan.series):
        return  # nothing was fetched: a summary of zeros would only read like success
    for note in st.notices[:20]:
        err_console.print(f"warning: {note}", markup=False)
    for note in st.failures[:20]:
        err_console.print(f"failed: {note}", markup=False)
    console.print(
        f"ingest {'interrupted' if st.interrupted else 'done'} in {st.elapsed:.1f} s: "
        f"{st.series_done}/{st.series} series, {st.pages:,} pages, {st.rows_fetched:,} rows fetched "
        f"({st.rows_new:,} new, {st.rows_replaced:,} replaced, {st.rows_unchanged:,} unchanged), "
        f"{st.requests:,} requests ({st.requests_per_s:.1f}/s), {st.retries} retries, {st.bans} bans, "
        f"{st.empty_candles:,} candles verified empty at the exchange"
    )
    if len(st.datasets) > 1 or set(st.datasets) - {"candles"}:
        for name, ds in st.datasets.items():  # one line per dataset
            console.print(
                f"  {name:<16} {ds.series_done}/{ds.series} series, {ds.pages:,} pages, {ds.rows_fetched:,} rows "
                f"({ds.rows_new:,} new, {ds.rows_replaced:,} replaced, {ds.rows_unchanged:,} unchanged), "
                f"{ds.empty:,} verified empty, {ds.failed_windows} failed windows"
            )
    gaps = sum(len(v) for v in out.unexplained_gaps.values())
    if gaps:
        err_console.print(
            f"{gaps} unexplained gap(s) in {len(out.unexplained_gaps)} series; run `marketlake ingest` again or `marketlake repair`"
        )
    else:
        console.print("no unexplained gaps")


@app.command()
def ingest(
    symbols: Annotated[
        Optional[str],
        typer.Option("--symbols", help="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT (this or --all-symbols)."),
    ] = None,
    all_symbols: Annotated[
        bool, typer.Option("--all-symbols", help="Every Trading instrument of the category (instead of --symbols).")
    ] = False,
    timeframes: Annotated[str, typer.Option("--timeframes", help="Comma-separated Bybit intervals.")] = "1",
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="What to fetch: comma-separated klines, funding, mark, index, premium, oi, or all "
            "(mark/index/premium at --timeframes; oi at --oi-intervals).",
        ),
    ] = "klines",
    oi_intervals: Annotated[
        str, typer.Option("--oi-intervals", help="Open-interest intervals: 5min, 15min, 30min, 1h, 4h, 1d.")
    ] = "5min",
    days: Annotated[
        Optional[float],
        typer.Option("--days", help="Fetch the last N days (0 < N <= 36500).", parser=BoundedFloat(0, 36_500, open_low=True)),
    ] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    mode: Annotated[str, typer.Option("--mode", help="full, recent (latest 50 candles) or live.")] = "full",
    category: CategoryOpt = None,
    base_url: BaseUrlOpt = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", help="Requests in flight at most (1..256).", parser=BoundedInt(1, 256)),
    ] = 32,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (requests, rows, ETA) and stop.")
    ] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fetch Bybit klines (and funding, mark/index/premium candles, open interest: --data) into the
    lake: only what the ledger does not cover; resumable. Records an instruments snapshot."""
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.ingest.service import IngestOutcome, IngestRequest, run_ingest
    from marketlake.net.ratelimit import RateBudget
    from marketlake.store import Lake

    settings = load_settings(lake, config, base_url=base_url, category=category)
    request = IngestRequest.of(
        symbols=symbols,
        all_symbols=all_symbols,
        timeframes=timeframes,
        category=settings.category,
        days=days,
        start_ms=None if start is None else to_ms(start, what="--start"),
        end_ms=None if end is None else to_ms(end, what="--end"),
        mode=mode,
        data=data,
        oi_intervals=oi_intervals,
    )
    the_lake = Lake(settings=settings)
    retries = RetryLine()
    view = _ProgressView(enabled=not json_ and not dry_run, retries=retries)
    if mode == "live" and not dry_run:
        try:
            _backfill_then_stream(the_lake, settings, request, view, concurrency, json_)
        except KeyboardInterrupt:  # during the backfill (the stream itself reports its own)
            view.close()
            _interrupted_ingest(view.stats)
        return

    async def main() -> IngestOutcome:
        budget = RateBudget(settings.rate_limit_per_5s, state_dir=the_lake.storage.state_dir)
        announce_pause(budget)
        async with BybitRestClient(settings.base_url, budget=budget, on_retry=retries) as client:
            return await run_ingest(
                the_lake,
                client,
                request,
                dry_run=dry_run,
                concurrency=concurrency,
                on_progress=view.update,
                on_plan=view.plan,
            )

    try:
        outcome = run_async(main())
    except KeyboardInterrupt:
        view.close()  # the bar stops before the line is printed, not over it
        _interrupted_ingest(view.stats)
    finally:
        view.close()
    if dry_run:
        _render_plan(outcome.plan, settings, json_)
        for note in outcome.notes:
            err_console.print(f"note: {note}", markup=False)
        _fail_on_unknown(outcome.unknown_symbols, settings.category)
        return
    _render_outcome(outcome, json_)
    _fail_on_unknown(outcome.unknown_symbols, settings.category)
    if not outcome.ok:
        raise typer.Exit(1)


def _fail_on_unknown(unknown: list[str], category: str) -> None:
    """One error line naming every symbol the exchange does not list (exit status 2)."""
    if unknown:
        raise InvalidSymbolError(
            f"unknown symbol(s) {', '.join(unknown)}: Bybit lists no such {category} instrument; "
            "nothing was fetched for them"
        )


def announce_pause(budget: RateBudget) -> None:
    """Say so when the shared request budget is paused (a 403 ban or a rate-limit reset recorded by
    an earlier run or another process): otherwise the run would wait minutes without a word."""
    import datetime as dt

    from marketlake.clock import get_clock

    until = budget.blocked_until_ms
    now = get_clock().now_ms()
    if until > now:
        at = dt.datetime.fromtimestamp(until / 1000, dt.UTC).strftime("%H:%M:%S UTC")
        err_console.print(
            f"waiting for Bybit's ban / rate limit to lift: no requests until {at} "
            f"({(until - now) / 1000:,.0f} s; Ctrl-C stops, a re-run resumes)",
            markup=False,
            soft_wrap=True,
        )


def _backfill_then_stream(
    the_lake: Lake, settings: Settings, request: IngestRequest, view: _ProgressView, concurrency: int, json_: bool
) -> None:
    """``--mode live`` (the old ``fetch_data_hybrid``): the historical ingest, then ``stream`` of the
    same series; the stream resumes where the ledger's coverage ends, so the seam is backfilled."""
    from marketlake.cli.stream_cmd import run_stream
    from marketlake.ingest.live_types import LiveConfig
    from marketlake.ingest.service import run_ingest

    async def backfill(client: BybitRestClient) -> LiveConfig:
        try:
            outcome = await run_ingest(
                the_lake, client, request, concurrency=concurrency, on_progress=view.update, on_plan=view.plan
            )
        finally:
            view.close()
        if not json_:
            _render_outcome(outcome, False)
        symbols = sorted({sp.sid.symbol for sp in outcome.plan.series})
        if not symbols:
            raise DataValidationError("nothing to stream: none of the symbols is listed")
        return LiveConfig.of(
            symbols, [t.name for t in request.timeframes], category=request.category, exchange=settings.exchange
        )

    run_stream(the_lake, settings, backfill, as_json=json_, retries=view.retries)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port 0..65535 (0: any free one).")] = 8765,
    symbols: Annotated[str, typer.Option("--symbols", help="How many linear symbols (1..9999), or a comma-separated list.")] = "10",
    seed: Annotated[int, typer.Option(help="Market seed.")] = 0,
    speed: Annotated[float, typer.Option(help="Market-time speed-up (market ms per real ms; 0 freezes it).")] = 1.0,
    lake: Annotated[Optional[Path], typer.Option("--lake", help="Replay this lake instead of a synthetic market.")] = None,
    exchange: Annotated[Optional[str], typer.Option("--exchange", help="With --lake: whose candles to serve (default: bybit, or the lake's only exchange).")] = None,
    start: Annotated[Optional[str], typer.Option("--start", help="Market time at start (default: now; with --lake: after its last candle).")] = None,
) -> None:
    """Run the Bybit emulator (REST and WebSocket on one port) for tests, demos and bots.

    A deterministic synthetic market, or an existing lake replayed (--lake).
    """
    from marketlake_emulator import serve_command

    def opener(root: Path) -> Lake:
        from marketlake.store import Lake

        return Lake(root, settings=load_settings(root, None))

    def ready(url: str, what: str) -> None:
        # Warned once listening: bad input before that is one line, the error alone.
        if host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(f"warning: serving on {host}: reachable from other machines")
        console.print(f"bybit emulator ({what}) listening on {url} (Ctrl-C stops it)")

    serve_command(
        host=host,
        port=port,
        symbols=symbols,
        seed=seed,
        speed=speed,
        start_ms=None if start is None else to_ms(start, what="--start"),
        lake_dir=lake,
        open_lake=opener,
        exchange=exchange,
        on_ready=ready,
    )
