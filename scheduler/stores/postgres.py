"""The PostgreSQL state store: the records of several scheduler replicas in one database.

Same records and semantics as :class:`scheduler.state.SQLiteStore` (see
:mod:`scheduler.stores.protocol` for the contract); what differs is how the claims stay atomic
when replicas on different hosts race:

* ``start_run`` takes a transaction-level advisory lock for the job, then ``SELECT ... FOR UPDATE``
  on the slot's row, and inserts or resets it with ``INSERT ... ON CONFLICT (job, slot)``.  Only
  ``start_run`` ever makes a row ``running``, so with claims of one job serialized, "the slot is
  free" and "no other slot of the job is held" (``forbid_overlap``) stay true until the commit;
* ``expire_leases`` and ``abandon_running`` lock candidate rows with ``FOR UPDATE SKIP LOCKED``
  and re-check them, so each run is abandoned by one caller, and no caller waits on another;
* ``finish_run`` and ``set_attempt`` only touch a run still owned by this store, so a replica
  whose lease ran out cannot overwrite the run of the replica that took the slot over.

Connection: one psycopg connection (autocommit, explicit transactions) behind a lock, as the
SQLite store does: the store's calls are short and a process makes a few per run, so a pool would
buy nothing.  A broken connection (server restart, failover, idle timeout) is dropped and reopened:
a read, or a write whose ``BEGIN`` failed, is retried once on the fresh connection; a write that
failed later is not (it may have committed) and raises :class:`StateError`.
Every error text leaving the store has the URL's password masked.  Timestamps are
``timestamptz``; the session time zone is UTC so values read back are UTC like SQLite's.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from scheduler import clock
from scheduler.errors import StateError
from scheduler.redaction import Redactor
from scheduler.state import RunRecord, held
from scheduler.status import RunStatus
from scheduler.stores.leases import DEFAULT_LEASE_TTL, expired_reason, new_owner
from scheduler.stores.migrations import LATEST, migrate, schema_version
from scheduler.stores.postgres_console import PostgresConsole
from scheduler.stores.protocol import StateStore
from scheduler.stores.records import finish_columns
from scheduler.stores.urls import mask_url, url_secrets

JOB_LOCK = 0x5C4E  # advisory lock namespace of per-job claims: (JOB_LOCK, hashtext(job))
CONNECT_TIMEOUT = 10
TCP_USER_TIMEOUT_MS = 10_000  # unacknowledged data for this long: the connection is broken
T = TypeVar("T")
# Statuses as SQL literals: the enum's own strings, interpolated as constants (never user input).
_RUNNING, _SUCCESS, _SKIPPED, _ABANDONED = (f"'{s.value}'" for s in (
    RunStatus.RUNNING, RunStatus.SUCCESS, RunStatus.SKIPPED, RunStatus.ABANDONED))


def _one(cursor: Any) -> dict[str, Any]:
    """The one row a statement returns (``RETURNING``, an aggregate): there is always one."""
    row = cursor.fetchone()
    if row is None:
        raise StateError("the state store returned no row where one was certain")
    return dict(row)


def _record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=row["id"], job=row["job"], slot=row["slot"], logical_date=row["logical_date"], trigger=row["trigger"],
        attempt=row["attempt"], status=RunStatus(row["status"]), exit_code=row["exit_code"], signal=row["signal"],
        started_at=row["started_at"], ended_at=row["ended_at"], duration=row["duration"], rows=row["rows"],
        metrics=row["metrics"] or {}, error=row["error"],
    )


class PostgresStore(PostgresConsole):
    """PostgreSQL-backed records.  Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, url: str, lease_ttl: timedelta = DEFAULT_LEASE_TTL) -> None:
        self._url = url
        self._redactor = Redactor(url_secrets(url) | {url})
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self.owner = new_owner()
        self.host = socket.gethostname()
        self.lease_ttl = lease_ttl
        self.url = mask_url(url)  # for messages: never the password

    @classmethod
    def open(cls, url: str, lease_ttl: timedelta = DEFAULT_LEASE_TTL) -> PostgresStore:
        """Connect and bring the schema up to date.  Raises :class:`StateError`."""
        store = cls(url, lease_ttl)
        with store._lock:
            conn = store._connection()
            try:
                found = schema_version(conn)
                if found <= LATEST:
                    migrate(conn)
            except psycopg.Error as exc:
                store.close()
                raise store._error("cannot migrate the state store", exc) from None
        if found > LATEST:  # a newer scheduler migrated it: refuse rather than misread its rows
            store.close()
            raise StateError(f"the state database {store.url} has schema version {found}, newer than this "
                             f"scheduler's {LATEST}: upgrade the scheduler")
        return store

    def _error(self, what: str, exc: BaseException) -> StateError:
        return StateError(self._redactor.redact(f"{what} {self.url}: {str(exc).strip()}"))

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            try:
                # keepalives and tcp_user_timeout: a cut network fails a call within seconds
                # instead of leaving it hanging for the kernel's retransmission timeout (minutes)
                self._conn = psycopg.connect(self._url, autocommit=True, row_factory=dict_row,
                                             connect_timeout=CONNECT_TIMEOUT, options="-c TimeZone=UTC",
                                             application_name="scheduler", keepalives=1, keepalives_idle=5,
                                             keepalives_interval=2, keepalives_count=3,
                                             tcp_user_timeout=TCP_USER_TIMEOUT_MS)
            except psycopg.Error as exc:
                raise self._error("cannot open the state store", exc) from None
        return self._conn

    def _drop_if_broken(self) -> bool:
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self._conn.close()
            self._conn = None
            return True
        return False

    def sibling(self) -> StateStore:
        """The same database on a connection of its own (opened on first use), claiming as this
        store's owner: lease renewal must not wait behind a long call of the loop's connection."""
        other = PostgresStore(self._url, self.lease_ttl)
        other.owner, other.host = self.owner, self.host
        return other

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """One write transaction; errors become :class:`StateError`.  Only a failed ``BEGIN`` is
        retried (on a fresh connection): a failure after it may follow a commit."""
        with self._lock:
            try:
                with ExitStack() as stack:
                    yield self._begin(stack)
            except psycopg.Error as exc:
                self._drop_if_broken()
                raise self._error("state store write failed at", exc) from None

    def _begin(self, stack: ExitStack) -> psycopg.Connection[dict[str, Any]]:
        for attempt in (1, 2):
            conn = self._connection()
            try:
                stack.enter_context(conn.transaction())
                return conn
            except psycopg.OperationalError:
                if not self._drop_if_broken() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _read(self, query: Callable[[psycopg.Connection[dict[str, Any]]], T]) -> T:
        """Run a read; retried once on a fresh connection when the old one broke (server restart)."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    return query(conn)
                except psycopg.Error as exc:
                    if not self._drop_if_broken() or attempt == 2:
                        raise self._error("state store read failed at", exc) from None
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        return bool(self._read(lambda c: _one(c.execute("SELECT 1 AS one"))["one"] == 1))

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, job: str, slot: datetime, logical_date: date, trigger: str, attempt: int = 1, *,
                  forbid_overlap: bool = False, only_from: Collection[str] | None = None) -> int | None:
        """Claim ``(job, slot)``; see the module docstring for why this is race-free."""
        now = clock.now()
        with self._tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (JOB_LOCK, job))
            current = db.execute("SELECT status, pid, host, lease_until FROM runs WHERE job = %s AND slot = %s "
                                 "FOR UPDATE", (job, slot)).fetchone()
            if current is not None and held(current, now, self.host):
                return None
            if current is not None and only_from is not None and current["status"] not in only_from:
                return None
            if forbid_overlap and any(held(r, now, self.host) for r in db.execute(
                    f"SELECT status, pid, host, lease_until FROM runs WHERE job = %s AND status = {_RUNNING} "
                    "AND slot <> %s", (job, slot))):
                return None
            row = db.execute(
                f"""INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, pid, host,
                                     owner, lease_until)
                   VALUES (%s, %s, %s, %s, %s, {_RUNNING}, %s, %s, %s, %s, %s)
                   ON CONFLICT (job, slot) DO UPDATE SET
                     trigger = excluded.trigger, attempt = excluded.attempt, status = {_RUNNING},
                     started_at = excluded.started_at, ended_at = NULL, duration = NULL, exit_code = NULL,
                     signal = NULL, rows = NULL, metrics = NULL, error = NULL, pid = excluded.pid,
                     host = excluded.host, logical_date = excluded.logical_date, owner = excluded.owner,
                     lease_until = excluded.lease_until
                   RETURNING id""",
                (job, slot, logical_date, trigger, attempt, now, os.getpid(), self.host, self.owner,
                 now + self.lease_ttl),
            )
        return int(_one(row)["id"])

    def set_attempt(self, run_id: int, attempt: int) -> None:
        with self._tx() as db:
            db.execute(f"UPDATE runs SET attempt = %s, error = NULL WHERE id = %s AND status = {_RUNNING} "
                       "AND (owner IS NULL OR owner = %s)", (attempt, run_id, self.owner))

    def finish_run(self, run_id: int, status: RunStatus, *, exit_code: int | None = None, signal: int | None = None,
                   duration: float | None = None, error: str | None = None, metrics: dict[str, Any] | None = None,
                   watermark: tuple[str, str] | None = None, ended_at: datetime | None = None) -> bool:
        status_value, metrics_json, rows = finish_columns(status, metrics)
        now = ended_at or clock.now()
        with self._tx() as db:
            updated = db.execute(
                """UPDATE runs SET status = %s, exit_code = %s, signal = %s, ended_at = %s, duration = %s,
                   error = %s, metrics = %s::jsonb, rows = %s WHERE id = %s AND (owner IS NULL OR owner = %s)""",
                (status_value, exit_code, signal, now, duration, error, metrics_json, rows, run_id, self.owner),
            ).rowcount
            if updated and watermark is not None:
                db.execute("INSERT INTO watermarks (job, value, updated_at) VALUES (%s, %s, %s) "
                           "ON CONFLICT (job) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                           (watermark[0], watermark[1], now))
        return bool(updated)

    def record_skipped(self, job: str, slot: datetime, logical_date: date, trigger: str, reason: str,
                       status: RunStatus = RunStatus.SKIPPED, *, only_new: bool = False) -> bool:
        now = clock.now()
        conflict = "NOTHING" if only_new else f"""UPDATE SET status = excluded.status, ended_at = excluded.ended_at,
                     error = excluded.error WHERE runs.status NOT IN ({_RUNNING}, {_SUCCESS})"""
        with self._tx() as db:
            return db.execute(
                f"""INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, ended_at, error)
                   VALUES (%s, %s, %s, %s, 0, %s, %s, %s, %s) ON CONFLICT (job, slot) DO {conflict}""",
                (job, slot, logical_date, trigger, RunStatus(status).value, now, now, reason),
            ).rowcount == 1

    def abandon_running(self, reason: str = "scheduler stopped while the run was active") -> list[RunRecord]:
        """Mark ``running`` rows ``abandoned`` whose process is provably gone: on this host with a
        dead pid (or this very pid: a previous life of a PID-1 scheduler), or on another host with
        a lease that ran out.  Other hosts' runs with a live lease belong to other replicas and are
        left alone (a replica restarted under a new host name recovers its runs by lease expiry)."""
        now = clock.now()
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status = {_RUNNING} ORDER BY id FOR UPDATE SKIP LOCKED")
            stale = [r["id"] for r in rows
                     if r["pid"] == os.getpid() and r["host"] == self.host or not held(r, now, self.host)]
            changed = db.execute(f"UPDATE runs SET status = {_ABANDONED}, ended_at = %s, error = %s "
                                 "WHERE id = ANY(%s) RETURNING *", (now, reason, stale)).fetchall()
        return sorted((_record(r) for r in changed), key=lambda r: r.id)

    def get_run(self, run_id: int) -> RunRecord | None:
        row = self._read(lambda c: c.execute("SELECT * FROM runs WHERE id = %s", (run_id,)).fetchone())
        return _record(row) if row else None

    def find_run(self, job: str, slot: datetime) -> RunRecord | None:
        row = self._read(lambda c: c.execute("SELECT * FROM runs WHERE job = %s AND slot = %s",
                                             (job, slot)).fetchone())
        return _record(row) if row else None

    def history(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        query = ("SELECT * FROM runs" + (" WHERE job = %s" if job else "")
                 + " ORDER BY started_at DESC NULLS LAST, id DESC LIMIT %s")
        args: tuple[Any, ...] = (job, limit) if job else (limit,)
        return [_record(r) for r in self._read(lambda c: c.execute(query, args).fetchall())]

    def last_runs(self) -> dict[str, RunRecord]:
        rows = self._read(lambda c: c.execute(
            f"SELECT DISTINCT ON (job) * FROM runs WHERE status <> {_SKIPPED} "
            "ORDER BY job, started_at DESC NULLS LAST, id DESC").fetchall())
        return {r["job"]: _record(r) for r in rows}

    def succeeded(self, job: str, logical_date: date) -> bool:
        return self._read(lambda c: c.execute(
            f"SELECT 1 FROM runs WHERE job = %s AND logical_date = %s AND status = {_SUCCESS} LIMIT 1",
            (job, logical_date)).fetchone()) is not None

    def last_success(self, job: str) -> datetime | None:
        row = self._read(lambda c: c.execute(
            f"SELECT max(ended_at) AS last FROM runs WHERE job = %s AND status = {_SUCCESS}", (job,)).fetchone())
        return row["last"] if row else None

    def failure_streak(self, job: str) -> int:
        rows = self._read(lambda c: c.execute(
            f"SELECT status FROM runs WHERE job = %s AND status NOT IN ({_SKIPPED}, {_RUNNING}) "
            "ORDER BY started_at DESC NULLS LAST, id DESC LIMIT 1000", (job,)).fetchall())
        streak = 0
        for row in rows:
            if row["status"] == RunStatus.SUCCESS:
                break
            streak += 1
        return streak

    # --- watermarks and last fired slots ------------------------------------------------------
    def watermark(self, job: str) -> str | None:
        row = self._read(lambda c: c.execute("SELECT value FROM watermarks WHERE job = %s", (job,)).fetchone())
        return row["value"] if row else None

    def last_fired(self, job: str) -> datetime | None:
        row = self._read(lambda c: c.execute("SELECT slot FROM last_fired WHERE job = %s", (job,)).fetchone())
        return row["slot"] if row else None

    def set_last_fired(self, job: str, slot: datetime) -> None:
        self.set_last_fired_many({job: slot})

    def set_last_fired_many(self, slots: dict[str, datetime]) -> None:
        with self._tx() as db, db.cursor() as cur:
            # jobs in one order everywhere: two replicas' upserts cannot deadlock on each other's rows
            cur.executemany("INSERT INTO last_fired (job, slot) VALUES (%s, %s) ON CONFLICT (job) DO UPDATE SET "
                            "slot = excluded.slot WHERE excluded.slot > last_fired.slot", sorted(slots.items()))

    def advance_last_fired(self, job: str, expected: datetime | None, new: datetime) -> bool:
        with self._tx() as db:
            if expected is None:
                return db.execute("INSERT INTO last_fired (job, slot) VALUES (%s, %s) ON CONFLICT (job) DO NOTHING",
                                  (job, new)).rowcount == 1
            return db.execute("UPDATE last_fired SET slot = %s WHERE job = %s AND slot = %s",
                              (new, job, expected)).rowcount == 1

    # --- leases ---------------------------------------------------------------------------------
    def renew_leases(self, owner: str, ttl: timedelta, now: datetime | None = None) -> list[int]:
        until = (now or clock.now()) + ttl
        with self._tx() as db:
            rows = db.execute(f"UPDATE runs SET lease_until = %s WHERE owner = %s AND status = {_RUNNING} "
                              "RETURNING id", (until, owner)).fetchall()
        return sorted(int(r["id"]) for r in rows)

    def expire_leases(self, now: datetime | None = None) -> list[RunRecord]:
        now = now or clock.now()
        with self._tx() as db:
            # SKIP LOCKED: a row another caller is expiring right now is theirs to return
            rows = db.execute(f"SELECT id, owner, lease_until FROM runs WHERE status = {_RUNNING} AND lease_until < %s "
                              "ORDER BY id FOR UPDATE SKIP LOCKED", (now,)).fetchall()
            changed = [_one(db.execute(f"UPDATE runs SET status = {_ABANDONED}, ended_at = %s, error = %s "
                                       "WHERE id = %s RETURNING *",
                                       (now, expired_reason(r["owner"], r["lease_until"]), r["id"])))
                       for r in rows]
        return [_record(r) for r in changed]
