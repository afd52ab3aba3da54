"""A run's heartbeat: the runner tells the ledger every minute that its process is alive.

On this host a dead run is found by its pid; the heartbeat is what tells a run of another host
(a lake on a shared filesystem) that died from one still working (see
:meth:`~marketlake.store.ledger.Ledger.reap_dead_runs`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from marketlake.store.ledger import RUN_HEARTBEAT_S, Ledger

__all__ = ["keep_alive"]

log = logging.getLogger(__name__)


async def keep_alive(ledger: Ledger, run_id: str, every_s: float = RUN_HEARTBEAT_S) -> None:
    """Renew ``run_id``'s heartbeat every ``every_s`` seconds until cancelled.

    The wait is the event loop's real time, not the replaceable clock's: a test clock's sleep
    returns at once, which would turn this loop into a busy one. The stamp itself is the clock's,
    like every other time in the ledger.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            ledger.heartbeat(run_id)
        except sqlite3.Error as exc:
            # A missed beat costs nothing until ten are missed; the run itself must go on.
            log.warning("heartbeat of run %s not recorded: %s", run_id, exc)
