"""The ``--cluster`` / ``--scheduler`` flags of the batch commands (archive, build-candles, check).

Without either flag a command runs in its own process, as it always did. The flags are checked
before anything else runs (a bad value is the only line printed, exit status 2); Dask itself is
imported only once a cluster is opened (:mod:`marketlake.cluster`), so ``--help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:  # pragma: no cover
    from marketlake.cluster import ClusterSpec

__all__ = ["ClusterOpt", "SchedulerOpt", "cluster_spec"]

ClusterOpt = Annotated[
    Optional[str],
    typer.Option(
        "--cluster",
        help="Run the work as tasks on a Dask cluster of N worker processes on this machine: "
        "local:N (1..64).",
        show_default=False,
    ),
]
SchedulerOpt = Annotated[
    Optional[str],
    typer.Option(
        "--scheduler",
        help="Run the work as tasks on a running Dask scheduler's workers: tcp://HOST:PORT "
        "(they need marketlake and the same lake root).",
        show_default=False,
    ),
]


def cluster_spec(cluster: str | None, scheduler: str | None) -> ClusterSpec | None:
    """The cluster the flags ask for, None for neither (see :func:`marketlake.cluster.parse_cluster`)."""
    from marketlake.cluster import parse_cluster

    return parse_cluster(cluster, scheduler)
