"""What every state store does: the contract the daemon, runner, planner and CLI rely on.

Two backends implement it: :class:`scheduler.state.SQLiteStore` (one host, the default) and
:class:`scheduler.stores.postgres.PostgresStore` (several scheduler replicas sharing one database).
``tests/state`` runs one suite against both.

Invariants every backend keeps:

* one row per ``(job, slot)``: a rerun of a finished slot (retry, ``run-job --date``, backfill)
  resets that row and keeps its id, so records stay idempotent;
* :meth:`StateStore.start_run` is the atomic claim of ``(job, slot)``: of any number of callers
  racing for the same slot, across processes and hosts, at most one gets a run id while the slot
  is held; a slot is held while its row is ``running`` and its process lives (seen from its own
  host) or its lease lasts (seen from another host);
* a watermark is only written together with the success of the run that published its data, and
  only by the run's owner;
* timestamps are timezone-aware UTC ``datetime`` values on the way in and out;
* every method is safe to call from several threads of one process.

Claiming the next slot needs no leader: ``advance_last_fired(job, seen, slot)`` decides which
replica plans the slot, ``start_run(job, slot, ...)`` which one runs it; the loser of either
simply moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.state import RunRecord
    from scheduler.stores.records import JobControl, OutputLine, TriggerRequest


@runtime_checkable
class StateStore(Protocol):
    """Run records, watermarks, last fired slots, and the claims and leases of running runs."""

    owner: str
    """This store's replica id (``host:pid:random``): the owner recorded on the runs it claims."""
    host: str
    """The host name recorded on the runs it claims: their process is checked directly from the
    same host; from another host only their lease tells whether they live."""
    lease_ttl: timedelta
    """How long a claim holds without renewal."""

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        ...

    def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""
        ...

    def sibling(self) -> StateStore:
        """Another store on the same database with this store's ``owner`` and ``lease_ttl`` but a
        connection of its own, so a thread renewing leases never waits behind this store's calls."""
        ...

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, job: str, slot: datetime, logical_date: date, trigger: str, attempt: int = 1, *,
                  forbid_overlap: bool = False, only_from: Collection[str] | None = None) -> int | None:
        """Claim ``(job, slot)`` for this store's owner with a fresh lease; return the run id.

        ``None`` when the slot is held by a live run, or (``forbid_overlap``, for
        ``concurrency: forbid``) while any other slot of the job is held.  Atomic across replicas.
        ``only_from`` narrows the claim to a slot without a row or whose row has one of these
        statuses: ``()`` claims only a slot nobody recorded yet (a scheduled slot fires once, however
        many replicas decide it, and however late), ``("abandoned",)`` resumes an abandoned run once.
        """
        ...

    def set_attempt(self, run_id: int, attempt: int) -> None:
        """Count a retry of a run this store owns."""
        ...

    def finish_run(self, run_id: int, status: RunStatus, *, exit_code: int | None = None, signal: int | None = None,
                   duration: float | None = None, error: str | None = None, metrics: dict[str, Any] | None = None,
                   watermark: tuple[str, str] | None = None, ended_at: datetime | None = None) -> bool:
        """Record a final status (and the watermark, in the same transaction).  False, with
        nothing written, when the run is no longer this store's (its slot was taken over).
        ``ended_at`` (default: now) is when the run ended, for a record written later."""
        ...

    def record_skipped(self, job: str, slot: datetime, logical_date: date, trigger: str, reason: str,
                       status: RunStatus = RunStatus.SKIPPED, *, only_new: bool = False) -> bool:
        """Record a slot that was not run; never overwrites a ``running`` or ``success`` row, and
        with ``only_new`` no row at all (the slot's first record decides it).  True when written."""
        ...

    def abandon_running(self, reason: str = "scheduler stopped while the run was active") -> list[RunRecord]:
        """On scheduler start: mark ``running`` rows whose owner is provably gone ``abandoned``;
        return those runs (their ids and jobs, for the log)."""
        ...

    def get_run(self, run_id: int) -> RunRecord | None:
        ...

    def find_run(self, job: str, slot: datetime) -> RunRecord | None:
        ...

    def history(self, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Newest first."""
        ...

    def last_runs(self) -> dict[str, RunRecord]:
        """The newest finished or running record per job (``skipped`` rows passed over)."""
        ...

    def succeeded(self, job: str, logical_date: date) -> bool:
        ...

    def last_success(self, job: str) -> datetime | None:
        ...

    def failure_streak(self, job: str) -> int:
        """How many of the job's newest finished runs failed in a row."""
        ...

    # --- watermarks and last fired slots ------------------------------------------------------
    def watermark(self, job: str) -> str | None:
        ...

    def last_fired(self, job: str) -> datetime | None:
        ...

    def set_last_fired(self, job: str, slot: datetime) -> None:
        """Advance the job's last fired slot (never moves it backwards)."""
        ...

    def set_last_fired_many(self, slots: dict[str, datetime]) -> None:
        """Advance several jobs' last fired slots in one transaction (never backwards)."""
        ...

    def advance_last_fired(self, job: str, expected: datetime | None, new: datetime) -> bool:
        """Compare-and-set of the last fired slot: True for exactly one of several replicas that
        saw ``expected`` and try to move it on."""
        ...

    # --- leases ---------------------------------------------------------------------------------
    def renew_leases(self, owner: str, ttl: timedelta, now: datetime | None = None) -> list[int]:
        """Extend the leases of ``owner``'s running runs to ``now + ttl``; return the ids still held."""
        ...

    def expire_leases(self, now: datetime | None = None) -> list[RunRecord]:
        """Mark running runs whose lease ended before ``now`` ``abandoned`` (error names the owner);
        each is returned by exactly one of any number of concurrent callers."""
        ...

    # --- run output (scheduler/output.py writes it, ``scheduler logs`` reads it) ----------------
    def write_output(self, run_id: int, lines: Sequence[OutputLine], cut: tuple[int, int] | None = None) -> None:
        """In one transaction: delete the run's lines with ``cut[0] < seq <= cut[1]`` (lines cut
        from the middle of a long output), then insert or replace ``lines`` by ``(run_id, seq)``."""
        ...

    def read_output(self, run_id: int, after: int = 0, limit: int = 10_000) -> list[OutputLine]:
        """The run's stored lines with ``seq > after``, in order, at most ``limit``."""
        ...

    def clear_output(self, run_id: int) -> None:
        """Forget a run's output (its slot is being run again: the record keeps its id)."""
        ...

    def prune_output(self, keep_runs: int | None, keep_days: float | None, now: datetime | None = None) -> int:
        """Delete the output of finished runs beyond the newest ``keep_runs`` per job or ended more
        than ``keep_days`` ago (None: no such limit), and claimed run requests older than a day;
        run rows stay.  Returns how many runs lost their output."""
        ...

    # --- job controls and run requests (scheduler/control.py) ----------------------------------
    def control_version(self) -> int:
        """A number that changes whenever a job is paused or resumed or a run is requested: the
        daemon polls it (cheap) and reads the controls only when it moved."""
        ...

    def set_paused(self, job: str, paused: bool, reason: str | None, by: str, run_id: int | None = None) -> bool:
        """Pause or resume ``job``; True when that changed its state (then the version moves)."""
        ...

    def job_controls(self) -> dict[str, JobControl]:
        """Every job's control row (jobs never paused have none)."""
        ...

    def request_trigger(self, job: str, logical_date: date | None, trigger: str) -> int:
        """Queue a request to run ``job`` (its latest slot, or the slot of ``logical_date``); its id."""
        ...

    def claim_triggers(self, owner: str,
                       slot_for: Callable[[str, date | None], datetime | None]) -> list[TriggerRequest]:
        """Claim unclaimed requests for ``owner``, oldest first: each is returned by exactly one of
        any number of concurrent claimers.  ``slot_for(job, logical_date)`` gives the slot to run,
        or None for a request this claimer cannot serve (a job it does not know): left queued."""
        ...

    def get_trigger(self, request_id: int) -> TriggerRequest | None:
        ...

    def cancel_trigger(self, request_id: int) -> bool:
        """Withdraw a request nobody has claimed yet; False when it was claimed (or is gone)."""
        ...
