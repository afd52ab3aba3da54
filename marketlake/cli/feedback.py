"""Feedback on long or failing work, for the CLI: the updating retry line, progress bars for
``check``/``fsck``, and the one line a Ctrl-C leaves behind.

The library reports through callbacks (:class:`~marketlake.net.backoff.RetryEvent` observers,
``progress(done, total)``) and never prints; everything a person sees is decided here. All of it
goes to stderr, so stdout (tables, ``--json``) stays clean for scripts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from marketlake.cli.failures import one_line
from marketlake.cli.render import err_console

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from marketlake.net.backoff import RetryEvent

__all__ = ["ProgressOpt", "RetryLine", "describe_retry", "exit_interrupted", "progress_bar", "show_progress"]

ProgressOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--progress/--no-progress",
        help="A progress bar on stderr (default: only when stderr is a terminal and not --json).",
        show_default=False,
    ),
]

# Erase the current terminal line and return to its start (ANSI "erase in line", whole line).
_ERASE = "\r\x1b[2K"
_REASON_CHARS = 160


def describe_retry(event: RetryEvent) -> str:
    """One line for a retry: the attempt that failed, when the next one goes out, the reason.

    ``retrying: attempt 3/8 failed, next at 12:00:07 UTC (in 4.2 s): GET /v5/market/time:
    ClientConnectorError: ...``; the reason comes last because a narrow terminal cuts the line.
    """
    reason = one_line(event.reason)
    if len(reason) > _REASON_CHARS:
        reason = reason[: _REASON_CHARS - 1] + "…"
    when = ""
    if event.next_at_ms is not None:
        at = dt.datetime.fromtimestamp(event.next_at_ms / 1000, dt.UTC).strftime("%H:%M:%S UTC")
        when = f", next at {at} (in {event.delay_s:.1f} s)"
    return f"retrying: attempt {event.attempt}/{event.max_attempts} failed{when}: {reason}"


class RetryLine:
    """A :data:`~marketlake.net.backoff.RetryObserver` that shows retries as they happen.

    On a terminal: one stderr line, rewritten by every retry and erased when the request
    succeeds or the command ends, so a failure still ends as its one error line. Off a terminal
    (a log, a pipe) nothing: a line per retry there would break the promise that a failure is one
    line on stderr, and nobody watches a log for a blank screen. While a progress bar owns the
    terminal, :attr:`sink` takes the text instead (``None`` means "recovered, clear it"): two
    writers redrawing one terminal would garble each other.

    Args:
        console: Where to write (default: the CLI's stderr console).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console if console is not None else err_console
        self.sink: Callable[[str | None], None] | None = None
        self.retries = 0
        self._shown = False

    @property
    def tty(self) -> bool:
        """True when the console is a terminal (the line can be rewritten in place)."""
        return bool(self.console.is_terminal)

    def __call__(self, event: RetryEvent) -> None:
        """Show ``event`` (see the class docstring)."""
        text = None if event.recovered else describe_retry(event)
        if text is not None:
            self.retries += 1
        if self.sink is not None:
            self.sink(text)
            return
        if not self.tty:
            return
        if text is None:
            self.clear()
            return
        # Cut to the width: a wrapped line could not be erased by going back to its start.
        width = max(20, self.console.width - 1)
        self._write(_ERASE + text[:width])
        self._shown = True

    def clear(self) -> None:
        """Erase the retry line if one is shown, so the next output starts on a clean line."""
        if self._shown:
            self._write(_ERASE)
            self._shown = False

    def _write(self, text: str) -> None:
        self.console.file.write(text)
        self.console.file.flush()


def show_progress(flag: bool | None, as_json: bool) -> bool:
    """Whether a command shows a progress bar: ``--progress`` forces it, ``--no-progress`` and
    ``--json`` suppress it (JSON consumers parse stdout, and a bar is noise in their logs);
    by default only when stderr is a terminal."""
    if as_json and not flag:
        return False
    if flag is not None:
        return flag
    return bool(err_console.is_terminal)


@contextlib.contextmanager
def progress_bar(description: str, unit: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr driven by a ``progress(done, total)`` callback.

    Yields the callback (None when not ``enabled``, so the library skips the calls). A new
    ``total`` starts the bar over (``fsck`` counts the files of each table in turn). The bar is
    removed when the block ends, also on Ctrl-C or an error, so the last line is the result.
    Enabled on a stderr that is no terminal (``--progress`` into a log), the bar is drawn
    anyway: that is what the flag asks for.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = err_console if err_console.is_terminal else Console(stderr=True, force_terminal=True, highlight=False)

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(description, total=None)
    state = {"total": -1}

    def progress(done: int, total: int) -> None:
        if total != state["total"]:
            state["total"] = total
            bar.reset(task, total=max(total, 1))
        bar.update(task, completed=done)

    bar.start()
    try:
        yield progress
    finally:
        bar.stop()


def exit_interrupted(what_was_committed: str) -> NoReturn:
    """End a command stopped by Ctrl-C: one line on stderr (what is committed, that a re-run
    resumes) and exit status 130, the shell's code for SIGINT."""
    err_console.print(f"interrupted: {what_was_committed}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)
