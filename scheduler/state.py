"""The state store: run records, watermarks and the last fired slot per job, in SQLite (WAL).

Invariants:
* one row per ``(job, slot)``: a rerun of the same slot (a retry, ``run-job --date`` again, a
  backfill) updates that row, so records stay idempotent;
* a watermark is only written together with the success of the run that published its data;
* timestamps are stored as ISO-8601 UTC strings, which sort chronologically.

The store is safe to share between threads of one process (one connection behind a lock) and
between processes (WAL plus a busy timeout), so ``run-job`` may run beside the daemon.  It
implements :class:`scheduler.stores.protocol.StateStore`, claims and leases included: every write
runs in a ``BEGIN IMMEDIATE`` transaction, which serializes writers on the one host SQLite serves.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler import clock
from scheduler.process import pid_alive
from scheduler.status import RunStatus
from scheduler.stores.leases import DEFAULT_LEASE_TTL, expired_reason, new_owner
from scheduler.stores.records import finish_columns
from scheduler.stores.sqlite_console import SQLiteConsole
from scheduler.stores.sqlite_schema import connect

# Statuses as SQL literals: the enum's own strings, interpolated as constants (never user input).
_RUNNING, _SUCCESS, _SKIPPED, _ABANDONED = (f"'{s.value}'" for s in (
    RunStatus.RUNNING, RunStatus.SUCCESS, RunStatus.SKIPPED, RunStatus.ABANDONED))

def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def _owner_alive(pid: int | None, host: str | None, other_hosts: bool = True) -> bool:
    """Whether the process that wrote a ``running`` row still runs.  Another host's process cannot
    be checked: it counts as alive (``other_hosts``) or not."""
    if host != socket.gethostname():
        return other_hosts
    if not pid:
        return False
    return pid_alive(pid)


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def held(row: Mapping[str, Any], now: datetime, host: str) -> bool:
    """Whether a ``running`` row still belongs to a live run, as seen from ``host``: a run of this
    host while its process lives (checked directly, whatever the lease says); a run of another
    host while its lease lasts (a row without a lease: always, as its process cannot be checked)."""
    if row["status"] != RunStatus.RUNNING:
        return False
    if row["host"] == host:
        return bool(row["pid"]) and pid_alive(row["pid"])
    lease = row["lease_until"]
    if isinstance(lease, str):
        lease = parse_time(lease)
    return lease is None or lease >= now


@dataclass(frozen=True)
class RunRecord:
    """A row of the ``runs`` table as read back."""

    id: int
    job: str
    slot: datetime
    logical_date: date
    trigger: str
    attempt: int
    status: RunStatus
    exit_code: int | None
    signal: int | None
    started_at: datetime | None
    ended_at: datetime | None
    duration: float | None
    rows: int | None
    metrics: dict[str, Any]
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "job": self.job, "slot": _iso(self.slot), "logical_date": self.logical_date.isoformat(),
            "trigger": self.trigger, "attempt": self.attempt, "status": self.status,
            "exit_code": self.exit_code, "signal": self.signal, "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at), "duration": self.duration, "rows": self.rows,
            "metrics": self.metrics, "error": self.error,
        }


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], job=row["job"], slot=datetime.fromisoformat(row["slot"]),
        logical_date=date.fromisoformat(row["logical_date"]), trigger=row["trigger"], attempt=row["attempt"],
        status=RunStatus(row["status"]), exit_code=row["exit_code"], signal=row["signal"],
        started_at=parse_time(row["started_at"]), ended_at=parse_time(row["ended_at"]), duration=row["duration"],
        rows=row["rows"], metrics=json.loads(row["metrics"]) if row["metrics"] else {}, error=row["error"],
    )


class SQLiteStore(SQLiteConsole):
    """SQLite-backed records.  Create with :meth:`open`; close with :meth:`close`.

    ``owner`` names this store's process (host, pid and a random part): the runs it claims carry
    it, and only it may finish them or renew their leases.  ``host`` is recorded on them too.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, lease_ttl: timedelta = DEFAULT_LEASE_TTL) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.owner = new_owner()
        self.host = socket.gethostname()
        self.lease_ttl = lease_ttl

    @classmethod
    def open(cls, path: Path, lease_ttl: timedelta = DEFAULT_LEASE_TTL) -> SQLiteStore:
        """Open (creating directory, file and tables as needed).  Raises :class:`StoreNotWritable`
        when this process may not write the file or its directory (WAL needs both)."""
        return cls(connect(path), path, lease_ttl)

    def sibling(self) -> StateStore:
        """The same file on a connection of its own, claiming as this store's owner."""
        other = SQLiteStore.open(self.path, self.lease_ttl)
        other.owner, other.host = self.owner, self.host
        return other

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        with self._lock:
            answer: int = self._conn.execute("SELECT 1").fetchone()[0]
            return answer == 1

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, job: str, slot: datetime, logical_date: date, trigger: str, attempt: int = 1, *,
                  forbid_overlap: bool = False, only_from: Collection[str] | None = None) -> int | None:
        """Claim ``(job, slot)``: mark it running (inserting or resetting its row); return the run id.

        Returns ``None`` when that row is already held (see :func:`held`): two runs never share one
        record.  A ``running`` row whose process is gone, or, from another host, whose lease ran
        out, is taken over.  With
        ``forbid_overlap`` it also returns ``None`` while another slot of the job is held; with
        ``only_from`` while the slot has a row whose status is not one of those.
        """
        now = clock.now()
        with self._tx() as db:
            current = db.execute("SELECT status, pid, host, lease_until FROM runs WHERE job = ? AND slot = ?",
                                 (job, _iso(slot))).fetchone()
            if current is not None and held(current, now, self.host):
                return None
            if current is not None and only_from is not None and current["status"] not in only_from:
                return None
            if forbid_overlap and any(held(r, now, self.host) for r in db.execute(
                    f"SELECT status, pid, host, lease_until FROM runs WHERE job = ? AND status = {_RUNNING} "
                    "AND slot != ?", (job, _iso(slot)))):
                return None
            row = db.execute(
                f"""INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, pid, host,
                                     owner, lease_until)
                   VALUES (?, ?, ?, ?, ?, {_RUNNING}, ?, ?, ?, ?, ?)
                   ON CONFLICT (job, slot) DO UPDATE SET
                     trigger = excluded.trigger, attempt = excluded.attempt, status = {_RUNNING},
                     started_at = excluded.started_at, ended_at = NULL, duration = NULL, exit_code = NULL,
                     signal = NULL, rows = NULL, metrics = NULL, error = NULL, pid = excluded.pid,
                     host = excluded.host, logical_date = excluded.logical_date, owner = excluded.owner,
                     lease_until = excluded.lease_until
                   RETURNING id""",
                (job, _iso(slot), logical_date.isoformat(), trigger, attempt, _iso(now), os.getpid(), self.host,
                 self.owner, _iso(now + self.lease_ttl)),
            ).fetchone()
        return int(row[0])

    def set_attempt(self, run_id: int, attempt: int) -> None:
        """Count a retry of a run this store still owns (a run taken over meanwhile is left alone)."""
        with self._tx() as db:
            db.execute(f"UPDATE runs SET attempt = ?, error = NULL WHERE id = ? AND status = {_RUNNING} "
                       "AND (owner IS NULL OR owner = ?)", (attempt, run_id, self.owner))

    def finish_run(self, run_id: int, status: RunStatus, *, exit_code: int | None = None, signal: int | None = None,
                   duration: float | None = None, error: str | None = None, metrics: dict[str, Any] | None = None,
                   watermark: tuple[str, str] | None = None, ended_at: datetime | None = None) -> bool:
        """Record a run's outcome; with ``watermark=(job, value)`` store it in the same transaction.

        Returns False, recording nothing (watermark included), when another owner took the run's
        slot over after this store's lease ran out.
        """
        status_value, metrics_json, rows = finish_columns(status, metrics)
        with self._tx() as db:
            updated = db.execute(
                """UPDATE runs SET status = ?, exit_code = ?, signal = ?, ended_at = ?, duration = ?, error = ?,
                   metrics = ?, rows = ? WHERE id = ? AND (owner IS NULL OR owner = ?)""",
                (status_value, exit_code, signal, _iso(ended_at or clock.now()), duration, error, metrics_json,
                 rows, run_id, self.owner),
            ).rowcount
            if updated and watermark is not None:
                db.execute(
                    "INSERT INTO watermarks (job, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (job) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (watermark[0], watermark[1], _iso(clock.now())),
                )
        return bool(updated)

    def record_skipped(self, job: str, slot: datetime, logical_date: date, trigger: str, reason: str,
                       status: RunStatus = RunStatus.SKIPPED, *, only_new: bool = False) -> bool:
        """Record a slot that was not run: ``skipped`` (``concurrency: forbid`` while a run was
        active) or ``interrupted`` (still queued when the scheduler stopped).  With ``only_new``
        only a slot without a row is recorded.  True when a row was written."""
        now = _iso(clock.now())
        conflict = "NOTHING" if only_new else f"""UPDATE SET status = excluded.status, ended_at = excluded.ended_at,
                     error = excluded.error WHERE runs.status NOT IN ({_RUNNING}, {_SUCCESS})"""
        with self._tx() as db:
            return db.execute(
                f"""INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, ended_at, error)
                   VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (job, slot) DO {conflict}""",
                (job, _iso(slot), logical_date.isoformat(), trigger, RunStatus(status).value, now, now, reason),
            ).rowcount == 1

    def abandon_running(self, reason: str = "scheduler stopped while the run was active") -> list[RunRecord]:
        """Mark ``running`` rows ``abandoned`` unless their process provably lives on (called on
        daemon start: a ``run-job`` beside the daemon, on this host, keeps its row)."""
        with self._tx() as db:
            rows = [r for r in db.execute(f"SELECT * FROM runs WHERE status = {_RUNNING}").fetchall()
                    if not (r["pid"] != os.getpid() and _owner_alive(r["pid"], r["host"], other_hosts=False))]
            db.executemany(f"UPDATE runs SET status = {_ABANDONED}, ended_at = ?, error = ? WHERE id = ?",
                           [(_iso(clock.now()), reason, r["id"]) for r in rows])
        return [_record(r) for r in rows]

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(row) if row else None

    def find_run(self, job: str, slot: datetime) -> RunRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE job = ? AND slot = ?", (job, _iso(slot))).fetchone()
        return _record(row) if row else None

    def history(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest first."""
        query = "SELECT * FROM runs" + (" WHERE job = ?" if job else "") + " ORDER BY started_at DESC, id DESC LIMIT ?"
        args: tuple[Any, ...] = (job, limit) if job else (limit,)
        with self._lock:
            return [_record(r) for r in self._conn.execute(query, args).fetchall()]

    def last_runs(self) -> dict[str, RunRecord]:
        """The newest finished or running record per job."""
        with self._lock:
            rows = self._conn.execute(
                f"""SELECT * FROM runs r WHERE id = (SELECT id FROM runs WHERE job = r.job AND status != {_SKIPPED}
                   ORDER BY started_at DESC, id DESC LIMIT 1)""").fetchall()
        return {r["job"]: _record(r) for r in rows}

    def succeeded(self, job: str, logical_date: date) -> bool:
        """True when ``job`` has a successful run for ``logical_date``."""
        with self._lock:
            row = self._conn.execute(f"SELECT 1 FROM runs WHERE job = ? AND logical_date = ? AND status = {_SUCCESS} "
                                     "LIMIT 1", (job, logical_date.isoformat())).fetchone()
        return row is not None

    def last_success(self, job: str) -> datetime | None:
        with self._lock:
            row = self._conn.execute(f"SELECT MAX(ended_at) FROM runs WHERE job = ? AND status = {_SUCCESS}",
                                     (job,)).fetchone()
        return parse_time(row[0]) if row and row[0] else None

    def failure_streak(self, job: str) -> int:
        """How many of the job's newest finished runs failed in a row."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT status FROM runs WHERE job = ? AND status NOT IN ({_SKIPPED}, {_RUNNING}) "
                "ORDER BY started_at DESC, id DESC LIMIT 1000", (job,)).fetchall()
        streak = 0
        for row in rows:
            if row[0] == RunStatus.SUCCESS:
                break
            streak += 1
        return streak

    # --- watermarks and last fired slots ------------------------------------------------------
    def watermark(self, job: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM watermarks WHERE job = ?", (job,)).fetchone()
        return row[0] if row else None

    def last_fired(self, job: str) -> datetime | None:
        with self._lock:
            row = self._conn.execute("SELECT slot FROM last_fired WHERE job = ?", (job,)).fetchone()
        return parse_time(row[0]) if row else None

    def set_last_fired(self, job: str, slot: datetime) -> None:
        """Advance the job's last fired slot (never moves it backwards)."""
        self.set_last_fired_many({job: slot})

    def set_last_fired_many(self, slots: dict[str, datetime]) -> None:
        """Advance several jobs' last fired slots in one transaction."""
        with self._tx() as db:
            db.executemany("INSERT INTO last_fired (job, slot) VALUES (?, ?) ON CONFLICT (job) DO UPDATE SET "
                           "slot = excluded.slot WHERE excluded.slot > last_fired.slot",
                           [(job, _iso(slot)) for job, slot in slots.items()])

    def advance_last_fired(self, job: str, expected: datetime | None, new: datetime) -> bool:
        """Compare-and-set the job's last fired slot: move it from ``expected`` (``None``: never
        fired) to ``new`` and return True, or change nothing and return False when it is not
        ``expected`` any more (another scheduler advanced it first)."""
        with self._tx() as db:
            if expected is None:
                return db.execute("INSERT INTO last_fired (job, slot) VALUES (?, ?) ON CONFLICT (job) DO NOTHING",
                                  (job, _iso(new))).rowcount == 1
            return db.execute("UPDATE last_fired SET slot = ? WHERE job = ? AND slot = ?",
                              (_iso(new), job, _iso(expected))).rowcount == 1

    # --- leases ---------------------------------------------------------------------------------
    def renew_leases(self, owner: str, ttl: timedelta, now: datetime | None = None) -> list[int]:
        """Extend the lease of every ``running`` run of ``owner`` to ``now + ttl``; return their ids.

        A run missing from the answer is no longer the owner's (its lease expired and it was
        abandoned or taken over): the owner must stop working on it.
        """
        until = _iso((now or clock.now()) + ttl)
        with self._tx() as db:
            rows = db.execute(f"UPDATE runs SET lease_until = ? WHERE owner = ? AND status = {_RUNNING} RETURNING id",
                              (until, owner)).fetchall()
        return sorted(int(r[0]) for r in rows)

    def expire_leases(self, now: datetime | None = None) -> list[RunRecord]:
        """Mark ``running`` runs whose lease ended before ``now`` ``abandoned``; return them.

        Each such run is returned by exactly one call, however many run at once.
        """
        now = now or clock.now()
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status = {_RUNNING} AND lease_until < ?",
                              (_iso(now),)).fetchall()
            db.executemany(f"UPDATE runs SET status = {_ABANDONED}, ended_at = ?, error = ? WHERE id = ?",
                           [(_iso(now), expired_reason(r["owner"], parse_time(r["lease_until"])), r["id"])
                            for r in rows])
            changed = db.execute(f"SELECT * FROM runs WHERE id IN ({', '.join('?' * len(rows))})",
                                 [r["id"] for r in rows]).fetchall() if rows else []
        return [_record(r) for r in changed]


StateStore = SQLiteStore  # the name older code and tests import
