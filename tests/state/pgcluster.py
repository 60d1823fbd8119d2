"""A private PostgreSQL cluster for tests: ``initdb`` in a temp dir, ``pg_ctl start`` on a free port.

Run as the unprivileged ``postgres`` user when the tests run as root (the server refuses root).
The port is chosen at random and the start retried on another port when the bind fails, so two
test sessions on one machine never need a bind-close-reuse probe.  Superuser access is through
the unix socket in the temp dir (trust); the application role ``sched`` logs in over TCP on
127.0.0.1 with a SCRAM password, as a real deployment would.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bin_dir() -> Path:
    """``SCHEDULER_TEST_PG_BIN``, else Debian's PostgreSQL 15, else the newest version installed."""
    if os.environ.get("SCHEDULER_TEST_PG_BIN"):
        return Path(os.environ["SCHEDULER_TEST_PG_BIN"])
    default = Path("/usr/lib/postgresql/15/bin")
    found = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()),
                   key=lambda p: int(p.parent.name))
    return default if default.exists() or not found else found[-1]


BIN = _bin_dir()
START_ATTEMPTS = 8


def available() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (BIN / name).exists()]
    if missing:
        return f"PostgreSQL binaries not found in {BIN} (apt-get install postgresql): {', '.join(missing)}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as an unprivileged user"
    return None


class Cluster:
    """One running cluster.  :meth:`start` it, :meth:`stop` it; databases via :meth:`create_database`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="scheduler-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self.user = "sched"
        self.password = "pw-" + secrets.token_hex(12)
        self._count = 0
        self._options = ""

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._as_owner(argv), capture_output=True, text=True, timeout=120, cwd=self.root)

    def start(self) -> Cluster:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        init = self._run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
        for _ in range(START_ATTEMPTS):
            port = random.randint(20000, 60000)
            options = (f"-p {port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            started = self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                                 "-w", "-t", "60", "start"])
            if started.returncode == 0:
                self.port, self._options = port, options
                break
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()} {log[-2000:]}")
        else:
            raise RuntimeError(f"no free port for PostgreSQL after {START_ATTEMPTS} attempts")
        with self.admin() as conn:
            conn.execute(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def stop_server(self) -> None:
        """Stop the server, keeping its data (an outage: clients see refused connections)."""
        done = self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")

    def start_server(self) -> None:
        """Start the stopped server again on its port."""
        done = self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", self._options,
                          "-w", "-t", "60", "start"])
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}")

    def stop(self) -> None:
        if self.port:
            self._run([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def admin(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        """A superuser connection over the unix socket (autocommit)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
                               autocommit=True)

    def url(self, dbname: str, password: str | None = None) -> str:
        return f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh empty database owned by ``sched``; returns its name."""
        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {self.user} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def running() -> Iterator[Cluster]:
    """A started private cluster, stopped at the end (also when starting it failed half-way).
    Skips the test when PostgreSQL's binaries are missing (a failure under CI=true)."""
    reason = available()
    if reason:
        pytest.skip(reason)
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
