"""Runtime control of a running daemon: pause and resume, run requests, ``concurrency: queue``,
``run_on_start`` and ``pause_after_failures``.

The state lives in the state store (``job_control`` and ``run_requests``), never in the YAML, so
it survives restarts and every replica sharing the store sees it.  A watcher thread polls the
store's cheap ``control_version`` every :data:`POLL_EVERY` seconds and wakes the loop when it
moved; the loop (never the thread) then reads the controls and claims the requests.

Decisions, and why:

* a paused job's slots are not fired and not recorded: the planner holds the job with its cursor
  where it was, so ``resume`` applies the job's ``catchup`` to the slots passed meanwhile exactly
  as after a downtime.  A run that still reaches dispatch (an ``after:`` chain, a slot that fell
  due in the second before the pause was seen) is recorded ``skipped`` with the reason ``job paused``;
* explicit requests (``scheduler trigger``, ``POST /jobs/NAME/run``, ``run-job``) run a paused
  job: the operator asked for that run (a test run before resuming);
* ``concurrency: queue`` keeps at most one slot waiting per job (Temporal's BufferOne): it runs
  right after the active run; a further slot while one waits is recorded ``skipped``;
* ``pause_after_failures: N`` counts failed, timed-out and abandoned runs in a row since the job
  was last resumed (interrupted and skipped runs are passed over), so a resumed job gets N fresh
  attempts before it is paused again.

All methods run on the loop thread except the watcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.runs import RunRequest
from scheduler.stores.records import JobControl

if TYPE_CHECKING:
    from scheduler.daemon import Daemon
    from scheduler.runs import RunHandle
    from scheduler.stores.protocol import StateStore

POLL_EVERY = 1.0  # seconds: how soon a daemon sees a pause, resume or request made elsewhere
PRUNE_EVERY = 3600.0  # seconds between output retention passes
EXPLICIT = ("manual", "api", "request")  # triggers that run a paused job
PAUSED_REASON = "job paused"
FAILURES = ("failed", "timeout", "abandoned")
NEUTRAL = ("interrupted", "skipped", "running")


def failures_since(store: StateStore, job: str, since: datetime | None, depth: int) -> int:
    """Failed runs in a row among the job's newest (neutral ones passed over), only counting
    runs started after ``since``; at most ``depth``."""
    streak = 0
    for record in store.history(job, depth * 4 + 20):
        if since is not None and record.started_at is not None and record.started_at <= since:
            break
        if record.status in NEUTRAL:
            continue
        if record.status not in FAILURES or streak >= depth:
            break
        streak += 1
    return streak


class RuntimeControl:
    """One daemon's view of the job controls and the request queue, and its queue policy."""

    def __init__(self, store: StateStore, poll_every: float = POLL_EVERY) -> None:
        self.store = store
        self.poll_every = poll_every
        self.paused: dict[str, JobControl] = {}
        self.waiting: dict[str, RunRequest] = {}  # concurrency: queue, one slot per job
        self._changed = threading.Event()
        self._changed.set()  # the first step reads the controls
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, daemon: Daemon) -> None:
        """On daemon start (after the planner started): hold paused jobs, claim queued requests,
        queue the ``run_on_start`` runs, then watch the store."""
        seen = self.store.control_version()
        self.refresh(daemon)
        now = clock.now()
        for name, spec in daemon.config.jobs.items():
            if not (spec.run_on_start and spec.enabled):
                continue
            if name in self.paused:
                daemon.log.info("run_on_start passed over: job paused", job=name)
            elif not any(r.job == name for r in daemon.requested):
                daemon.requested.append(RunRequest(job=name, slot=daemon.config.schedules[name].latest_slot(now),
                                                   trigger="start"))
        self._thread = threading.Thread(target=self._watch, name="control-watch", daemon=True,
                                        args=(seen, daemon.wake, lambda: daemon.config.state, daemon.log))
        self._thread.start()

    def stop(self, record: Callable[[RunRequest], None]) -> None:
        """On shutdown: stop watching; hand each waiting slot to ``record`` (so a restart resumes it)."""
        self._stop.set()
        for request in self.waiting.values():
            record(request)
        self.waiting.clear()

    def _watch(self, seen: int, wake: Callable[[], None], state: Callable[[], Any], log: Any) -> None:
        """``state`` reads the daemon's current ``state:`` section (a reload may change retention)."""
        next_prune = clock.monotonic()
        failing = False
        while not self._stop.wait(self.poll_every):
            try:
                version = self.store.control_version()
                failing = False
            except Exception as exc:  # noqa: BLE001 - a store outage must not end the watch
                if not failing:
                    log.warning("job controls not readable", error=str(exc))
                failing = True
                continue
            if version != seen:
                seen = version
                self._changed.set()
                wake()
            if clock.monotonic() >= next_prune:
                next_prune = clock.monotonic() + PRUNE_EVERY
                self._prune(state(), log)

    def _prune(self, state: Any, log: Any) -> None:
        keep_runs, keep_days = state.keep_runs, state.keep_days
        if keep_runs is None and keep_days is None:
            return
        try:
            count = self.store.prune_output(keep_runs, keep_days)
        except Exception as exc:  # noqa: BLE001 - housekeeping; the next pass tries again
            log.warning("run output retention failed", error=str(exc))
            return
        if count:
            log.info("run output pruned", runs=count, keep_runs=keep_runs, keep_days=keep_days)

    # --- the loop's hooks ---------------------------------------------------------------------
    def step(self, daemon: Daemon) -> None:
        """Each loop step: read the controls and claim requests when the store says they changed."""
        if not self._changed.is_set():
            return
        self._changed.clear()
        try:
            self.refresh(daemon)
        except BaseException:
            self._changed.set()  # try again next step
            raise

    def refresh(self, daemon: Daemon) -> None:
        now = clock.now()
        paused = {job: c for job, c in self.store.job_controls().items() if c.paused}
        for job in sorted(set(self.paused) - set(paused)):
            daemon.planner.release(job, now)
            daemon.log.info("job resumed", job=job)
        for job, control in sorted(paused.items()):
            if job not in self.paused:
                daemon.planner.hold(job)
                daemon.log.info("job paused", job=job, reason=control.reason, by=control.changed_by)
        self.paused = paused
        config = daemon.config

        def slot_for(job: str, day: date | None) -> datetime | None:
            if job not in config.jobs:
                return None  # another replica's job (or a stale request): left for it
            schedule = config.schedules[job]
            return schedule.slot_for_date(day) if day is not None else schedule.latest_slot(now)

        for request in self.store.claim_triggers(self.store.owner, slot_for):
            assert request.slot is not None
            daemon.log.info("run requested", job=request.job, via="store", request_id=request.id,
                            slot=request.slot.isoformat())
            daemon.requested.append(RunRequest(job=request.job, slot=request.slot, trigger=request.trigger))

    def replanned(self, daemon: Daemon) -> None:
        """After a config reload made a new planner: hold the paused jobs in it too."""
        for job in self.paused:
            daemon.planner.hold(job)

    def admit(self, daemon: Daemon, request: RunRequest) -> bool:
        """False (recorded ``skipped``) for a run of a paused job that nobody asked for explicitly."""
        if request.job not in self.paused or request.trigger in EXPLICIT:
            return True
        daemon.record_not_run(request, PAUSED_REASON)
        daemon.log.info("run skipped", job=request.job, slot=request.slot.isoformat(), reason=PAUSED_REASON)
        return False

    def enqueue(self, daemon: Daemon, request: RunRequest, active: list[RunHandle]) -> None:
        """``concurrency: queue`` with a run active: park the slot, or skip it when one already waits."""
        job = request.job
        if job not in self.waiting:
            self.waiting[job] = request
            daemon.log.info("run waiting for the active run (concurrency: queue)", job=job,
                            slot=request.slot.isoformat(), active_run=active[0].run_id)
            return
        reason = f"a run of {job} is already waiting (concurrency: queue)"
        daemon.record_not_run(request, reason)
        daemon.log.warning("run skipped", job=job, slot=request.slot.isoformat(), reason=reason)

    def finished(self, daemon: Daemon, handle: RunHandle) -> None:
        """A run was collected: pause its job after too many failures; start the slot waiting behind it."""
        job = handle.request.job
        spec = daemon.config.jobs.get(job)
        result = handle.result
        limit = spec.pause_after_failures if spec is not None else None
        if limit and result is not None and result.status in FAILURES and job not in self.paused:
            self._pause_after_failures(daemon, job, limit, result.run_id)
        waiting = self.waiting.pop(job, None)
        if waiting is not None and not daemon.stop_signals:
            daemon.dispatch(waiting)

    def _pause_after_failures(self, daemon: Daemon, job: str, limit: int, run_id: int) -> None:
        control = self.store.job_controls().get(job)
        since = control.changed_at if control is not None else None  # its last resume
        streak = failures_since(self.store, job, since, limit)
        if streak < limit:
            return
        reason = f"{streak} failed runs in a row (pause_after_failures: {limit})"
        if self.store.set_paused(job, True, reason, "pause_after_failures", run_id=run_id):
            daemon.log.warning("job paused", job=job, reason=reason, run_id=run_id, by="pause_after_failures",
                               resume=f"scheduler resume {job}")
        control = self.store.job_controls().get(job)
        if control is not None and control.paused:  # (or another replica paused it first)
            self.paused[job] = control
            daemon.planner.hold(job)
