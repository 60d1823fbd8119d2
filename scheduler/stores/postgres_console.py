"""The operator console's tables in PostgreSQL: run output, job controls and run requests.

A mixin of :class:`scheduler.stores.postgres.PostgresStore` (which supplies ``_tx`` and
``_read``); the tables come with migration 3.  See :mod:`scheduler.stores.protocol` for what each
method promises.  Across replicas:

* a request is claimed under ``FOR UPDATE SKIP LOCKED``: each is returned by exactly one claimer,
  and no claimer waits on another;
* pause and resume are a conditional upsert, so of two replicas racing to pause a job exactly
  one reports the change;
* every change of a control or the queue moves ``control_version`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from scheduler import clock
from scheduler.stores.records import JobControl, OutputLine, TriggerRequest

T = TypeVar("T")
REQUESTS_KEPT = timedelta(days=1)
_BUMP = "UPDATE control_version SET version = version + 1 WHERE id = 1"


def _request(row: dict[str, Any]) -> TriggerRequest:
    return TriggerRequest(id=row["id"], job=row["job"], logical_date=row["logical_date"], trigger=row["trigger"],
                          requested_at=row["requested_at"], claimed_by=row["claimed_by"],
                          claimed_at=row["claimed_at"], slot=row["slot"])


class PostgresConsole:
    """Run output, job controls and run requests on the store's PostgreSQL connection."""

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError  # supplied by PostgresStore

    def _read(self, query: Callable[[Any], T]) -> T:
        raise NotImplementedError  # supplied by PostgresStore

    # --- run output -----------------------------------------------------------------------------
    def write_output(self, run_id: int, lines: Sequence[OutputLine], cut: tuple[int, int] | None = None) -> None:
        with self._tx() as db, db.cursor() as cur:
            if cut is not None:
                cur.execute("DELETE FROM run_output WHERE run_id = %s AND seq > %s AND seq <= %s", (run_id, *cut))
            cur.executemany("INSERT INTO run_output (run_id, seq, stream, line, ts) VALUES (%s, %s, %s, %s, %s) "
                            "ON CONFLICT (run_id, seq) DO UPDATE SET stream = excluded.stream, line = excluded.line, "
                            "ts = excluded.ts", [(run_id, ln.seq, ln.stream, ln.line, ln.ts) for ln in lines])

    def read_output(self, run_id: int, after: int = 0, limit: int = 10_000) -> list[OutputLine]:
        rows = self._read(lambda c: c.execute("SELECT seq, stream, line, ts FROM run_output WHERE run_id = %s "
                                              "AND seq > %s ORDER BY seq LIMIT %s", (run_id, after, limit)).fetchall())
        return [OutputLine(r["seq"], r["stream"], r["line"], r["ts"]) for r in rows]

    def clear_output(self, run_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM run_output WHERE run_id = %s", (run_id,))

    def prune_output(self, keep_runs: int | None, keep_days: float | None, now: datetime | None = None) -> int:
        now = now or clock.now()
        before = now - timedelta(days=keep_days) if keep_days is not None else None
        with self._tx() as db:
            doomed = [r["id"] for r in db.execute(
                """SELECT id FROM (SELECT id, ended_at, row_number() OVER (
                       PARTITION BY job ORDER BY started_at DESC NULLS LAST, id DESC) AS n
                       FROM runs WHERE status <> 'running') r
                   WHERE (n > %s OR ended_at < %s) AND EXISTS (SELECT 1 FROM run_output o WHERE o.run_id = r.id)""",
                (keep_runs if keep_runs is not None else 2**62, before)).fetchall()]
            db.execute("DELETE FROM run_output WHERE run_id = ANY(%s)", (doomed,))
            db.execute("DELETE FROM run_requests WHERE claimed_at < %s", (now - REQUESTS_KEPT,))
        return len(doomed)

    # --- job controls ---------------------------------------------------------------------------
    def control_version(self) -> int:
        row = self._read(lambda c: c.execute("SELECT version FROM control_version WHERE id = 1").fetchone())
        return int(row["version"]) if row else 0

    def set_paused(self, job: str, paused: bool, reason: str | None, by: str, run_id: int | None = None) -> bool:
        now = clock.now()
        with self._tx() as db:
            if paused:
                changed = db.execute(
                    "INSERT INTO job_control (job, paused, reason, changed_at, changed_by, run_id) "
                    "VALUES (%s, true, %s, %s, %s, %s) ON CONFLICT (job) DO UPDATE SET paused = true, "
                    "reason = excluded.reason, changed_at = excluded.changed_at, changed_by = excluded.changed_by, "
                    "run_id = excluded.run_id WHERE NOT job_control.paused", (job, reason, now, by, run_id)).rowcount
            else:
                changed = db.execute("UPDATE job_control SET paused = false, reason = %s, changed_at = %s, "
                                     "changed_by = %s, run_id = %s WHERE job = %s AND paused",
                                     (reason, now, by, run_id, job)).rowcount
            if changed:
                db.execute(_BUMP)
        return bool(changed)

    def job_controls(self) -> dict[str, JobControl]:
        rows = self._read(lambda c: c.execute("SELECT * FROM job_control").fetchall())
        return {r["job"]: JobControl(r["job"], r["paused"], r["reason"], r["changed_at"], r["changed_by"], r["run_id"])
                for r in rows}

    # --- run requests ---------------------------------------------------------------------------
    def request_trigger(self, job: str, logical_date: date | None, trigger: str) -> int:
        with self._tx() as db:
            row = db.execute("INSERT INTO run_requests (job, logical_date, trigger, requested_at) "
                             "VALUES (%s, %s, %s, %s) RETURNING id",
                             (job, logical_date, trigger, clock.now())).fetchone()
            db.execute(_BUMP)
        return int(row["id"])

    def claim_triggers(self, owner: str,
                       slot_for: Callable[[str, date | None], datetime | None]) -> list[TriggerRequest]:
        with self._tx() as db:
            # SKIP LOCKED: a request another replica is claiming right now is theirs
            rows = db.execute("SELECT * FROM run_requests WHERE claimed_by IS NULL ORDER BY id "
                              "FOR UPDATE SKIP LOCKED").fetchall()
            claimed = []
            for request in map(_request, rows):
                slot = slot_for(request.job, request.logical_date)
                if slot is None:
                    continue
                claimed.append(_request(db.execute(
                    "UPDATE run_requests SET claimed_by = %s, claimed_at = %s, slot = %s WHERE id = %s RETURNING *",
                    (owner, clock.now(), slot, request.id)).fetchone()))
        return claimed

    def get_trigger(self, request_id: int) -> TriggerRequest | None:
        row = self._read(lambda c: c.execute("SELECT * FROM run_requests WHERE id = %s", (request_id,)).fetchone())
        return _request(row) if row else None

    def cancel_trigger(self, request_id: int) -> bool:
        with self._tx() as db:
            return bool(db.execute("DELETE FROM run_requests WHERE id = %s AND claimed_by IS NULL",
                                   (request_id,)).rowcount == 1)
