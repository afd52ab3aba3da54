"""Flag value parsers of the CLI: numbers that must be finite and within a range, paths to write.

click's ``FloatRange`` lets NaN through (every comparison with NaN is false) and accepts ``inf``
and ``1e308``, which then blow up deep inside a library as a traceback or a hang. These parsers
reject such values while the flags are parsed, as a usage error: one line, exit status 2.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

import typer

from marketlake.errors import DataValidationError

__all__ = ["BoundedFloat", "BoundedInt", "check_input_path", "check_output_dir", "check_output_file"]


class BoundedFloat:
    """A flag parser (``typer.Option(parser=...)``): a finite float in ``[low, high]``.

    Raises ``typer.BadParameter`` for anything else: a usage error naming the flag.

    Args:
        low: Smallest value allowed.
        high: Largest value allowed.
        open_low: Exclude ``low`` itself (for "must be > 0").
    """

    __name__ = "float"  # click names the value type (and the metavar) after the parser

    def __init__(self, low: float, high: float, *, open_low: bool = False) -> None:
        self.low = low
        self.high = high
        self.open_low = open_low

    def _describe(self) -> str:
        return f"{'>' if self.open_low else '>='} {self.low:g} and <= {self.high:g}"

    def __call__(self, value: str | float) -> float:
        """Parse ``value``: a finite number in range, else ``typer.BadParameter``."""
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                raise typer.BadParameter(f"{str(value)[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise typer.BadParameter(f"{str(value)[:40]!r} is not a finite number (must be {self._describe()})")
        too_low = number <= self.low if self.open_low else number < self.low
        if too_low or number > self.high:
            raise typer.BadParameter(f"{number:g} is out of range (must be {self._describe()})")
        return number


class BoundedInt:
    """A flag parser (``typer.Option(parser=...)``): an integer in ``[low, high]``.

    Args:
        low: Smallest value allowed.
        high: Largest value allowed.
    """

    __name__ = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def __call__(self, value: str | int) -> int:
        """Parse ``value``: an integer in range, else ``typer.BadParameter``."""
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            # int() of a huge digit string is slow and pointless: nothing in range is that long.
            if len(text) > 20:
                raise typer.BadParameter(f"{text[:20]!r}... is out of range (must be {self.low}..{self.high})")
            try:
                number = int(text)
            except ValueError:
                raise typer.BadParameter(f"{text[:40]!r} is not an integer") from None
        if not self.low <= number <= self.high:
            raise typer.BadParameter(f"{number} is out of range (must be {self.low}..{self.high})")
        return number


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_fifo_has_reader(path: Path, what: str) -> None:
    # Opening a FIFO for writing blocks until someone reads it; non-blocking, the open fails at
    # once with ENXIO instead. A FIFO with a reader (`--output >(gzip > x.gz)`) is fine.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise DataValidationError(f"{what} {path}: a FIFO nobody reads (writing would hang)") from None
        raise DataValidationError(f"{what} {path}: {exc.strerror}") from None
    os.close(fd)


def check_output_file(path: Path, what: str) -> None:
    """Fail fast, before any work, when ``path`` cannot be written as a file.

    The real write still reports its own errors (a race, a full disk); this only spares the user a
    long ``check`` that ends in "cannot write".

    Args:
        path: The file to be written.
        what: The flag, for the message (``--report``).

    Raises:
        DataValidationError: ``path`` is a directory, a FIFO nobody reads, or its folder is
            missing, not a directory or not writable.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DataValidationError(f"{what} {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise DataValidationError(f"{what} {path}: is a directory, not a file")
        if stat.S_ISFIFO(st.st_mode):
            _check_fifo_has_reader(path, what)
            return
        if stat.S_ISCHR(st.st_mode):
            return  # /dev/stdout, /dev/null: the user asked for exactly that
        if not stat.S_ISREG(st.st_mode):
            raise DataValidationError(f"{what} {path}: not a regular file")
        if not os.access(path, os.W_OK):
            raise DataValidationError(f"{what} {path}: permission denied")
        return
    parent = path.parent
    if not parent.exists():
        found = _nearest_existing(parent)
        if found.is_dir():
            raise DataValidationError(f"{what} {path}: no such directory {parent}")
        raise DataValidationError(f"{what} {path}: {found} is not a directory")
    if not parent.is_dir():
        raise DataValidationError(f"{what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataValidationError(f"{what} {path}: permission denied in {parent}")


def check_output_dir(path: Path, what: str) -> None:
    """Fail fast when ``path`` cannot be used as (or created as) an output directory.

    Args:
        path: The directory files will be written into (created if missing).
        what: The argument's name, for the message.

    Raises:
        DataValidationError: ``path`` is a file, or the nearest existing ancestor is not a writable
            directory.
    """
    if path.exists():
        if not path.is_dir():
            raise DataValidationError(f"{what} {path}: not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise DataValidationError(f"{what} {path}: permission denied")
        return
    found = _nearest_existing(path)
    if not found.is_dir():
        raise DataValidationError(f"{what} {path}: {found} is not a directory")
    if not os.access(found, os.W_OK | os.X_OK):
        raise DataValidationError(f"{what} {path}: permission denied in {found}")


def check_input_path(path: Path) -> None:
    """An input argument must be an existing regular file or directory.

    Checked with ``stat``, without opening: opening a FIFO blocks until someone writes to it, and
    reading ``/dev/zero`` never ends.

    Args:
        path: A file or directory given on the command line.

    Raises:
        DataValidationError: ``path`` does not exist, cannot be looked at, or is a FIFO, socket or
            device.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataValidationError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise DataValidationError(f"{path}: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise DataValidationError(f"{path}: not a regular file or directory (a FIFO or device?)")
