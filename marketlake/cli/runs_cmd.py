"""``marketlake runs``: the ledger's record of ingest, archive and stream runs. Flags in, the
ledger's bookkeeping, a table out."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Annotated, Any, Optional

import typer

from marketlake.cli.app import ConfigOpt, JsonOpt, LakeOpt, app, open_lake
from marketlake.cli.params import BoundedInt
from marketlake.cli.render import console, print_frame, print_json

__all__ = ["runs"]


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def runs(
    limit: Annotated[
        int, typer.Option("--limit", help="Show the newest N runs (1..100000).", parser=BoundedInt(1, 100_000))
    ] = 20,
    kind: Annotated[Optional[str], typer.Option("--kind", help="Only runs of this kind: ingest, archive, stream.")] = None,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the newest runs: kind, status (ok, failed, interrupted, running, killed), owner, times.

    A run whose process is gone (killed, crashed, the machine lost power) is shown as killed.
    """
    import polars as pl

    the_lake = open_lake(lake, config)
    if not the_lake.has_ledger:
        # A read-only look: a mistyped --lake must not become a new lake.
        if json_:
            print_json([])
        else:
            console.print("no runs recorded (nothing was ingested into this lake yet)")
        return
    ledger = the_lake.ledger
    try:
        ledger.reap_dead_runs()
    except sqlite3.OperationalError:
        pass  # a read-only ledger: list what it records; the next run marks dead ones
    table = ledger.runs()
    if kind is not None:
        table = table.filter(pl.col("kind") == kind)
    table = table.head(limit)
    if json_:
        out: list[dict[str, Any]] = []
        for row in table.iter_rows(named=True):
            row["args"] = _json_or_none(row["args"])
            row["stats"] = _json_or_none(row["stats"])
            out.append(row)
        print_json(out)
        return
    if table.is_empty():
        console.print("no runs recorded" + (f" of kind {kind}" if kind else ""))
        return
    shown = table.select(
        "run_id",
        "kind",
        "status",
        pl.col("started_ms").map_elements(_when, return_dtype=pl.String).alias("started (UTC)"),
        # A running run's last heartbeat; a killed run's finish is its last sign of life.
        pl.coalesce("finished_ms", "heartbeat_ms").map_elements(_when, return_dtype=pl.String).alias("ended / last seen"),
        pl.when(pl.col("pid").is_not_null())
        .then(pl.col("pid").cast(pl.String) + "@" + pl.col("host"))
        .otherwise(pl.lit(""))
        .alias("process"),
    )
    print_frame(shown)


def _json_or_none(text: str | None) -> Any:
    import json

    return None if text is None else json.loads(text)
