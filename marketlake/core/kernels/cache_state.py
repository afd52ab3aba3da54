"""Whether numba's on-disk cache already holds the kernels' machine code.

The kernels are compiled with ``cache=True``: the first process to call one compiles it (several
seconds for the whole set) and writes an index (``<module>.<function>-<line>.pyXY.nbi``) plus the
code next to it; every later process loads them in milliseconds. The CLI asks here before a
command that runs kernels, so that a fresh install says why it is quiet instead of seeming hung.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["kernels_cold"]


def _locator_dir(source: Path) -> Path | None:
    """The directory numba caches ``source``'s kernels in, chosen exactly as numba chooses it."""
    try:
        from numba.core.caching import CacheImpl
    except ImportError:  # pragma: no cover  (numba moved its internals: say nothing rather than guess)
        return None
    for locator_class in CacheImpl._locator_classes:
        locator = locator_class.from_function(_locator_dir, str(source))
        if locator is not None:
            return Path(locator.get_cache_path())
    return None  # numba cannot cache here at all: every run compiles, there is nothing to announce


def kernels_cold(modules: tuple[str, ...]) -> bool:
    """True when one of ``modules`` has nothing in numba's cache yet (its first call compiles).

    Index files of a module exist once any of its kernels compiled; a module whose kernels never
    ran is the cold case this detects. A stale index (the source changed since) still counts as
    warm: that recompile happens to developers, not to a fresh install.

    Args:
        modules: Kernel module names (``check``, ``trades`` ...), the ones a command is about to
            use: asking about all of them would announce a compile that never happens for a
            command that does not call, say, the trade kernels, on every run.
    """
    here = Path(__file__).parent
    for stem in modules:
        cache_dir = _locator_dir(here / f"{stem}.py")
        if cache_dir is None:
            continue
        if not any(cache_dir.glob(f"{stem}.*.nbi")):
            return True
    return False
