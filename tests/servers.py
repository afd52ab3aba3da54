"""Real Redis and PostgreSQL servers for tests, on 127.0.0.1, on free ports, in temp directories.

``.ci/run`` installs Debian's ``redis-server`` and ``postgresql``; these helpers only need the
binaries. Each server is started once per test process (on first use) and stopped at exit.
When a binary is missing the tests that need it are skipped with a reason in capitals, so a
skipped run is never mistaken for a passing one (``-ra`` lists the reasons at the end).

PostgreSQL refuses to run as root; when the tests run as root the cluster is created and run as
the ``postgres`` system user (Debian's package creates it) through ``runuser``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

_START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, ready, proc: subprocess.Popen | None, log: Path | None) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not start: {tail}")


# ---------------------------------------------------------------------------------------- Redis


class RedisServer:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="marketlake-redis-"))
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start (or restart, on the same port) the server and wait until it answers PING."""
        if not self.port:
            self.port = free_port()
        log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for("redis-server", self._ping, self.proc, log)

    def stop(self) -> None:
        """Kill the server (the port stays reserved for a :meth:`start` again)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        """Stop and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """A throwaway PostgreSQL cluster (trust auth on 127.0.0.1, fsync off) on a free port."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="marketlake-pg-"))
        self.port = free_port()
        self.runas: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
            os.chown(self.dir, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            self.runas = ["runuser", "-u", user, "--"]

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` as the superuser ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.runas, *args], check=True, capture_output=True, timeout=_START_TIMEOUT_S)

    def start(self) -> None:
        """initdb (first time) and start; returns once the server accepts connections."""
        data = self.dir / "data"
        if not data.exists():
            self._run(
                str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--no-sync", "--locale=C",
            )
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop immediately (tests never need a clean shutdown)."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        """Stop and remove the cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by :meth:`create_database` (closing its sessions first)."""
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------------------ shared servers

_shared: dict[str, object] = {}


def shared_redis() -> RedisServer | str:
    """The process's Redis server, started on first use; or why there is none (a skip reason)."""
    if "redis" not in _shared:
        binary = shutil.which("redis-server")
        if binary is None:
            _shared["redis"] = (
                "REDIS TESTS SKIPPED: redis-server is not installed "
                "(`.ci/run` installs it: apt-get install -y redis-server)"
            )
        else:
            server = RedisServer(binary)
            server.start()
            atexit.register(server.close)
            _shared["redis"] = server
    return _shared["redis"]  # type: ignore[return-value]


def shared_postgres() -> PostgresServer | str:
    """The process's PostgreSQL server, started on first use; or why there is none."""
    if "postgres" not in _shared:
        bindir = _pg_bindir()
        if bindir is None:
            _shared["postgres"] = (
                "POSTGRESQL TESTS SKIPPED: initdb/pg_ctl not found "
                "(`.ci/run` installs them: apt-get install -y postgresql)"
            )
        else:
            server = PostgresServer(bindir)
            server.start()
            atexit.register(server.close)
            _shared["postgres"] = server
    return _shared["postgres"]  # type: ignore[return-value]
