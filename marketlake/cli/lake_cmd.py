"""``marketlake snapshot create|list|delete``, ``marketlake migrate`` and ``marketlake vacuum``:
the lake's versions, named snapshots and format. Flags in, library calls, output out."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from marketlake.errors import DataValidationError
from marketlake.cli.app import ConfigOpt, JsonOpt, LakeOpt, app, load_settings, open_lake
from marketlake.cli.render import console, print_json

if TYPE_CHECKING:  # pragma: no cover
    from marketlake.store import Lake

__all__ = ["print_versions"]

snapshot_app = typer.Typer(
    name="snapshot", no_args_is_help=True, rich_markup_mode=None,
    help="Name the lake's current version so a backtest can read exactly it later (never vacuumed).",
)
app.add_typer(snapshot_app)


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def print_versions(lake: Lake) -> None:
    """The tables' versions and the named snapshots, for ``info``."""
    versions = ", ".join(f"{ds} v{v}" for ds, v in lake.versions().items() if v >= 0)
    console.print(f"versions: {versions or 'none'}")
    snaps = lake.snapshots()
    if snaps:
        console.print("snapshots: " + ", ".join(f"{s.name} ({_when(s.created_ms)})" for s in snaps))


@snapshot_app.command("create")
def snapshot_create(
    name: Annotated[str, typer.Argument(help="Letters, digits, '.', '_' or '-'.")],
    note: Annotated[str, typer.Option("--note", help="Free text kept with the snapshot.")] = "",
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Record the current version of every table under NAME; read it with --as-of NAME or Lake(as_of=NAME)."""
    from marketlake.store.snapshots import describe

    info = open_lake(lake, config).create_snapshot(name, note)
    if json_:
        print_json(describe(info))
        return
    versions = ", ".join(f"{ds} v{v}" for ds, v in info.versions.items() if v >= 0)
    console.print(f"snapshot {info.name}: {versions or 'an empty lake'}; "
                  + ", ".join(f"{n:,} {ds} rows" for ds, n in info.rows.items() if n))


@snapshot_app.command("list")
def snapshot_list(lake: LakeOpt = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """List the named snapshots, oldest first."""
    from marketlake.store.snapshots import describe, list_snapshots

    settings = load_settings(lake, config)
    from marketlake.cli.app import lake_has_no_data

    snaps = [] if lake_has_no_data(settings) else open_lake(lake, config).snapshots()
    if json_:
        print_json([describe(s) for s in snaps])
        return
    if not snaps:
        console.print("no snapshots (marketlake snapshot create NAME)")
    for s in snaps:
        versions = ", ".join(f"{ds} v{v}" for ds, v in s.versions.items() if v >= 0)
        console.print(f"{s.name}\t{_when(s.created_ms)}\t{versions}\t{s.note}", markup=False, highlight=False)


@snapshot_app.command("delete")
def snapshot_delete(
    name: Annotated[str, typer.Argument(help="The snapshot to forget.")],
    lake: LakeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Forget a snapshot; files only it kept are deleted by the next vacuum."""
    open_lake(lake, config).delete_snapshot(name)
    console.print(f"snapshot {name} deleted")


@app.command()
def migrate(lake: LakeOpt = None, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Convert a lake of the previous (pre-Delta) format, verified row for row; resumable, a no-op when done."""
    from dataclasses import asdict

    from marketlake.store.migrate import migrate_lake

    settings = load_settings(lake, config)
    if "://" in settings.lake_root:
        raise DataValidationError(f"{settings.lake_root}: migrate converts a local lake of the previous format; "
                                  "a lake on object storage was always in the current one")
    root = settings.lake_path
    report = migrate_lake(root)
    if json_:
        print_json(asdict(report))
        return
    if not report.changed:
        console.print(f"{root}: already in the current format; nothing to do")
        return
    console.print(
        f"{root}: {', '.join(report.datasets) or 'clean-up'}: {report.partitions:,} partitions, "
        f"{report.rows:,} rows verified ({report.files_kept:,} files kept, {report.files_folded:,} folded); "
        f"{report.files_removed:,} old files removed"
    )


@app.command()
def vacuum(
    retention: Annotated[Optional[float], typer.Option(
        "--retention", min=0, max=10 * 365 * 86400,
        help="Seconds a replaced file stays for readers of older versions (default: gc_grace_seconds).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted.")] = False,
    lake: LakeOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Delete files no version within the retention and no named snapshot reads."""
    if retention is not None and retention != retention:  # NaN
        from marketlake.errors import DataValidationError

        raise DataValidationError("--retention must be a number of seconds")
    removed = open_lake(lake, config).vacuum(retention_s=retention, dry_run=dry_run)
    if json_:
        print_json({"dry_run": dry_run, "files": removed})
        return
    for path in removed:
        console.print(path, markup=False, highlight=False)
    console.print(f"{len(removed)} file(s) {'would be ' if dry_run else ''}deleted")
