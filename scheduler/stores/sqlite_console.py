"""The operator console's tables in SQLite: run output, job controls and run requests.

A mixin of :class:`scheduler.state.SQLiteStore` (which supplies the connection, its lock and
``_tx``); :data:`CONSOLE_SCHEMA` is created by ``SQLiteStore.open`` on new and old files alike.
See :mod:`scheduler.stores.protocol` for what each method promises.

Invariants: every change of a job control or the request queue moves ``control_version`` in the
same transaction, so a daemon that polls the version never misses one; a request is claimed by an
``UPDATE ... WHERE claimed_by IS NULL`` inside ``BEGIN IMMEDIATE``, which serializes claimers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta

from scheduler import clock
from scheduler.stores.records import JobControl, OutputLine, TriggerRequest

CONSOLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_output (
    run_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_control (
    job TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    reason TEXT,
    changed_at TEXT NOT NULL,
    changed_by TEXT NOT NULL,
    run_id INTEGER
);
CREATE TABLE IF NOT EXISTS run_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    logical_date TEXT,
    trigger TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at TEXT,
    slot TEXT
);
CREATE INDEX IF NOT EXISTS run_requests_open ON run_requests (id) WHERE claimed_by IS NULL;
CREATE TABLE IF NOT EXISTS control_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
"""

REQUESTS_KEPT = timedelta(days=1)
NO_LIMIT = 2**62  # keep_runs None: no run is beyond it
_BUMP = ("INSERT INTO control_version (id, version) VALUES (1, 1) "
         "ON CONFLICT (id) DO UPDATE SET version = control_version.version + 1")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _request(row: sqlite3.Row) -> TriggerRequest:
    return TriggerRequest(
        id=row["id"], job=row["job"],
        logical_date=date.fromisoformat(row["logical_date"]) if row["logical_date"] else None,
        trigger=row["trigger"], requested_at=datetime.fromisoformat(row["requested_at"]),
        claimed_by=row["claimed_by"], claimed_at=_time(row["claimed_at"]), slot=_time(row["slot"]))


class SQLiteConsole:
    """Run output, job controls and run requests on the store's SQLite connection."""

    _lock: threading.RLock
    _conn: sqlite3.Connection

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # supplied by SQLiteStore

    # --- run output -----------------------------------------------------------------------------
    def write_output(self, run_id: int, lines: Sequence[OutputLine], cut: tuple[int, int] | None = None) -> None:
        with self._tx() as db:
            if cut is not None:
                db.execute("DELETE FROM run_output WHERE run_id = ? AND seq > ? AND seq <= ?", (run_id, *cut))
            db.executemany("INSERT OR REPLACE INTO run_output (run_id, seq, stream, line, ts) VALUES (?, ?, ?, ?, ?)",
                           [(run_id, ln.seq, ln.stream, ln.line, _iso(ln.ts)) for ln in lines])

    def read_output(self, run_id: int, after: int = 0, limit: int = 10_000) -> list[OutputLine]:
        with self._lock:
            rows = self._conn.execute("SELECT seq, stream, line, ts FROM run_output WHERE run_id = ? AND seq > ? "
                                      "ORDER BY seq LIMIT ?", (run_id, after, limit)).fetchall()
        return [OutputLine(r["seq"], r["stream"], r["line"], datetime.fromisoformat(r["ts"])) for r in rows]

    def clear_output(self, run_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM run_output WHERE run_id = ?", (run_id,))

    def prune_output(self, keep_runs: int | None, keep_days: float | None, now: datetime | None = None) -> int:
        now = now or clock.now()
        # ended_at is ISO-8601 UTC text, which sorts chronologically; '~' sorts after every date
        before = _iso(now - timedelta(days=keep_days)) if keep_days is not None else ""
        with self._tx() as db:
            doomed = [r[0] for r in db.execute(
                """SELECT id FROM (SELECT id, ended_at, ROW_NUMBER() OVER (
                       PARTITION BY job ORDER BY started_at DESC, id DESC) AS n FROM runs WHERE status != 'running')
                   WHERE (n > ? OR ended_at < ?) AND id IN (SELECT DISTINCT run_id FROM run_output)""",
                (keep_runs if keep_runs is not None else NO_LIMIT, before))]
            db.executemany("DELETE FROM run_output WHERE run_id = ?", [(i,) for i in doomed])
            db.execute("DELETE FROM run_requests WHERE claimed_at < ?", (_iso(now - REQUESTS_KEPT),))
        return len(doomed)

    # --- job controls ---------------------------------------------------------------------------
    def control_version(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT version FROM control_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def set_paused(self, job: str, paused: bool, reason: str | None, by: str, run_id: int | None = None) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT paused FROM job_control WHERE job = ?", (job,)).fetchone()
            if bool(row and row[0]) == paused:
                return False
            db.execute("INSERT INTO job_control (job, paused, reason, changed_at, changed_by, run_id) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job) DO UPDATE SET paused = excluded.paused, "
                       "reason = excluded.reason, changed_at = excluded.changed_at, "
                       "changed_by = excluded.changed_by, run_id = excluded.run_id",
                       (job, int(paused), reason, _iso(clock.now()), by, run_id))
            db.execute(_BUMP)
        return True

    def job_controls(self) -> dict[str, JobControl]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM job_control").fetchall()
        return {r["job"]: JobControl(r["job"], bool(r["paused"]), r["reason"], datetime.fromisoformat(r["changed_at"]),
                                     r["changed_by"], r["run_id"]) for r in rows}

    # --- run requests ---------------------------------------------------------------------------
    def request_trigger(self, job: str, logical_date: date | None, trigger: str) -> int:
        with self._tx() as db:
            row = db.execute("INSERT INTO run_requests (job, logical_date, trigger, requested_at) VALUES (?, ?, ?, ?) "
                             "RETURNING id", (job, logical_date.isoformat() if logical_date else None, trigger,
                                              _iso(clock.now()))).fetchone()
            db.execute(_BUMP)
        return int(row[0])

    def claim_triggers(self, owner: str,
                       slot_for: Callable[[str, date | None], datetime | None]) -> list[TriggerRequest]:
        claimed: list[int] = []
        with self._tx() as db:
            for row in db.execute("SELECT * FROM run_requests WHERE claimed_by IS NULL ORDER BY id").fetchall():
                request = _request(row)
                slot = slot_for(request.job, request.logical_date)
                if slot is None:
                    continue
                db.execute("UPDATE run_requests SET claimed_by = ?, claimed_at = ?, slot = ? WHERE id = ? "
                           "AND claimed_by IS NULL", (owner, _iso(clock.now()), _iso(slot), request.id))
                claimed.append(request.id)
            rows = db.execute(f"SELECT * FROM run_requests WHERE id IN ({', '.join('?' * len(claimed))}) ORDER BY id",
                              claimed).fetchall() if claimed else []
        return [_request(r) for r in rows]

    def get_trigger(self, request_id: int) -> TriggerRequest | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM run_requests WHERE id = ?", (request_id,)).fetchone()
        return _request(row) if row else None

    def cancel_trigger(self, request_id: int) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM run_requests WHERE id = ? AND claimed_by IS NULL",
                              (request_id,)).rowcount == 1
