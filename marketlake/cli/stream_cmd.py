"""``marketlake stream`` (and the streaming half of ``ingest --mode live``): flags in, the live
runner, a status line, a summary out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from marketlake.cli.app import CategoryOpt, ConfigOpt, JsonOpt, LakeOpt, app, load_settings
from marketlake.cli.feedback import RetryLine, exit_interrupted
from marketlake.cli.params import BoundedFloat
from marketlake.cli.render import console, err_console, print_json
from marketlake.errors import DataValidationError
from marketlake.settings import Settings

# The live runner pulls in aiohttp, polars, pyarrow and numba: imported inside the functions.
if TYPE_CHECKING:  # pragma: no cover
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.ingest.live_types import LiveConfig, LiveStats
    from marketlake.store import Lake

__all__ = ["StatusLine", "run_stream", "stream"]


class StatusLine:
    """Formats the periodic status: messages/s since the last line, candles and trades written,
    reconnects, lag (local receipt minus the push's server time), drops and bad frames."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._last = (time.monotonic(), 0)

    def text(self, st: LiveStats) -> str:
        """One status line for ``st`` (and remember it for the next rate)."""
        now = time.monotonic()
        t0, n0 = self._last
        rate = (st.messages - n0) / max(now - t0, 1e-9)
        self._last = (now, st.messages)
        if self.as_json:
            return json.dumps(
                {
                    "msg_per_s": round(rate, 1),
                    "candles_written": st.candles_written + st.trade_candles_written,
                    "trades_written": st.trades_written,
                    "reconnects": st.reconnects,
                    "lag_ms": st.lag_ms,
                    "dropped": st.callback_dropped,
                    "malformed": st.malformed + st.oversized,
                    "backfills": st.backfills,
                }
            )
        return (
            f"stream: {rate:,.1f} msg/s, {st.candles_written + st.trade_candles_written:,} candles and "
            f"{st.trades_written:,} trades written, {st.reconnects} reconnects, {st.backfills} backfills, "
            f"lag {st.lag_ms / 1000:.2f} s, {st.callback_dropped} dropped, "
            f"{st.malformed + st.oversized} malformed"
        )

    def __call__(self, st: LiveStats) -> None:
        line = self.text(st)
        if self.as_json:
            err_console.print(line, markup=False, soft_wrap=True)
        else:
            console.print(line, markup=False, soft_wrap=True)


def run_stream(
    lake: Lake,
    settings: Settings,
    config: LiveConfig | Callable[[BybitRestClient], Awaitable[LiveConfig]],
    *,
    ws_url: str | None = None,
    as_json: bool = False,
    retries: RetryLine | None = None,
) -> LiveStats:
    """Stream until Ctrl-C or SIGTERM (both flush cleanly); print the summary.

    SIGTERM (a service manager stopping it) returns; Ctrl-C then ends the command with status 130
    and one line saying what is committed and that a re-run resumes.

    Args:
        lake: The lake.
        settings: Base URL and rate budget.
        config: What to stream, or a coroutine function that gets the REST client, does what must
            come first (``ingest --mode live`` backfills there) and returns it.
        ws_url: WebSocket URL (default: derived from the base URL and the category).
        as_json: Status lines as JSON on stderr, the summary as JSON on stdout.
        retries: Shows the REST client's retries (default: a new :class:`RetryLine`).
    """
    from marketlake.cli.ingest_cmd import announce_pause
    from marketlake.exchanges.bybit.rest import BybitRestClient
    from marketlake.exchanges.bybit.ws_frames import ws_url_for
    from marketlake.ingest.live import LiveRunner
    from marketlake.ingest.live_types import LiveConfig
    from marketlake.net.ratelimit import RateBudget

    status = StatusLine(as_json)
    retries = retries if retries is not None else RetryLine()
    stopped_by: list[signal.Signals] = []

    async def main() -> LiveStats:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        runner: LiveRunner | None = None

        def on_signal(sig: signal.Signals) -> None:
            # Streaming: flush and return. Before that (the backfill of ingest --mode live):
            # cancel it like Ctrl-C; the historical runner writes what it fetched first.
            stopped_by.append(sig)
            if runner is not None:
                runner.stop()
            elif me is not None:
                me.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            budget = RateBudget(settings.rate_limit_per_5s, state_dir=lake.storage.state_dir)
            announce_pause(budget)
            async with BybitRestClient(settings.base_url, budget=budget, on_retry=retries) as rest:
                cfg = config if isinstance(config, LiveConfig) else await config(rest)
                snapshot = asyncio.ensure_future(_record_instruments(lake, rest, cfg.category, settings.exchange))
                url = ws_url or ws_url_for(settings.base_url, cfg.category)
                runner = LiveRunner(
                    lake,
                    rest,
                    cfg,
                    ws_url=url,
                    on_status=status,
                    run_args={"symbols": list(cfg.symbols), "timeframes": [t.name for t in cfg.timeframes]},
                )
                if not as_json:
                    console.print(f"streaming {len(cfg.topics())} topics from {url} (Ctrl-C stops)")
                try:
                    return await runner.run()
                finally:
                    snapshot.cancel()
                    await asyncio.gather(snapshot, return_exceptions=True)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    try:
        stats = asyncio.run(main())
    finally:
        retries.clear()
    if as_json:
        print_json(stats.to_dict())
    else:
        console.print(
            f"stream stopped after {stats.elapsed_s:,.1f} s: {stats.messages:,} messages, "
            f"{stats.candles_written:,} candles ({stats.candles_backfilled:,} backfilled over REST), "
            f"{stats.trade_candles_written:,} candles from trades, {stats.trades_written:,} trades written; "
            f"{stats.reconnects} reconnects ({stats.silent_detected} silent), {stats.backfills} backfills, "
            f"{stats.malformed} malformed and {stats.oversized} oversized frames skipped, "
            f"{stats.callback_dropped} callback items dropped",
            markup=False,
            soft_wrap=True,
        )
    for topic, why in stats.rejected_topics.items():
        err_console.print(f"warning: Bybit refused {topic}: {why}", markup=False)
    if signal.SIGINT in stopped_by:
        exit_interrupted(
            f"{stats.candles_written + stats.trade_candles_written:,} candles and {stats.trades_written:,} trades "
            "committed; run `marketlake stream` again to resume (the time in between is backfilled over REST)"
        )
    return stats


async def _record_instruments(lake: Lake, rest: BybitRestClient, category: str, exchange: str) -> None:
    """The instruments snapshot of a stream start (beside the stream, best effort: a note)."""
    from marketlake.ingest.instruments import record_snapshot_best_effort

    note = await record_snapshot_best_effort(lake, rest, [category], exchange=exchange)
    if note:
        err_console.print(f"note: {note}", markup=False)


@app.command()
def stream(
    symbols: Annotated[
        Optional[str],
        typer.Option("--symbols", help="Comma-separated symbols to stream.", show_default=False),
    ] = None,
    timeframes: Annotated[
        str,
        typer.Option("--timeframes", help="Comma-separated timeframes; 1s, 5s, 15s are built from trades."),
    ] = "1",
    trades: Annotated[bool, typer.Option("--trades", help="Store trades (publicTrade) too.")] = False,
    category: CategoryOpt = None,
    base_url: Annotated[
        Optional[str],
        typer.Option(
            "--base-url", help="Bybit REST base URL (backfills; the WebSocket URL derives from it)."
        ),
    ] = None,
    ws_url: Annotated[
        Optional[str],
        typer.Option("--ws-url", help="WebSocket URL (default: ws(s)://HOST/v5/public/<category>)."),
    ] = None,
    flush_interval: Annotated[
        float,
        typer.Option(
            "--flush-interval", help="Seconds between micro-batch writes (0.05..3600).", parser=BoundedFloat(0.05, 3600)
        ),
    ] = 1.0,
    status_interval: Annotated[
        float,
        typer.Option(
            "--status-interval", help="Seconds between status lines (0.1..86400).", parser=BoundedFloat(0.1, 86_400)
        ),
    ] = 10.0,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Stream closed candles (and trades) into the lake over Bybit's WebSocket.

    Every disconnect is healed from REST; runs until Ctrl-C or SIGTERM.
    """
    from marketlake.ingest.live_types import LiveConfig
    from marketlake.store import Lake

    settings = load_settings(lake, config, base_url=base_url, category=category)
    if not symbols:
        raise DataValidationError("name the symbols to stream: --symbols BTCUSDT,ETHUSDT")
    cfg = LiveConfig.of(
        symbols,
        timeframes,
        trades=trades,
        category=settings.category,
        exchange=settings.exchange,
        flush_interval_s=flush_interval,
        status_interval_s=status_interval,
    )
    run_stream(Lake(settings=settings), settings, cfg, ws_url=ws_url, as_json=json_)
