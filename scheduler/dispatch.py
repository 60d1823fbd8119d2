"""The daemon's runs: dispatch under the concurrency policy and the parallelism cap, claims on a
store shared by replicas, collecting finished runs and starting their ``after:`` jobs.

:class:`Dispatch` is a part of :class:`~scheduler.daemon.Daemon` (which supplies the state
declared below); it runs on the loop thread, except :meth:`Dispatch._run_thread`, one thread per
run, which only executes the run and hands it back through ``completed``.  Invariants: a run is
started only once admitted (pause, ``concurrency``, ``max_parallel_runs``) and, with replicas,
claimed; every refused slot is recorded at most once across replicas; ``after:`` jobs start only
when every upstream succeeded for the same logical date, and never during shutdown.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from scheduler.errors import StateError
from scheduler.replica import LEASE_LOST, claim_mode
from scheduler.runs import RunHandle, RunRequest
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.config.compiled import Config
    from scheduler.control import RuntimeControl
    from scheduler.daemon import Daemon
    from scheduler.daemon_view import DaemonExtension
    from scheduler.replica import LeaseKeeper, Outbox
    from scheduler.runner import Runner
    from scheduler.stores.protocol import StateStore


def downstream_of(config: Config) -> dict[str, tuple[str, ...]]:
    """For each job, the jobs that name it in ``after:``."""
    out: dict[str, list[str]] = defaultdict(list)
    for name, spec in config.jobs.items():
        for upstream in spec.after:
            out[upstream].append(name)
    return {k: tuple(v) for k, v in out.items()}



class Dispatch:
    """Starting and collecting the daemon's runs (a part of :class:`~scheduler.daemon.Daemon`)."""

    config: Config
    store: StateStore
    log: Any
    runner: Runner
    control: RuntimeControl
    outbox: Outbox | None
    keeper: LeaseKeeper | None
    active: dict[str, list[RunHandle]]  # a defaultdict(list)
    backlog: deque[RunRequest]
    completed: deque[RunHandle]
    unclaimed: deque[RunRequest]
    chains: deque[RunHandle]
    downstream: dict[str, tuple[str, ...]]
    stop_signals: int

    @property
    def _daemon(self) -> Daemon:
        """This object as the daemon it is a part of: what run control and extensions are handed."""
        return cast("Daemon", self)

    def wake(self) -> None:
        raise NotImplementedError

    def _notify(self, hook: str, call: Callable[[DaemonExtension], None]) -> None:
        raise NotImplementedError

    def running_count(self) -> int:
        return sum(len(handles) for handles in self.active.values())

    def dispatch(self, request: RunRequest) -> RunHandle | None:
        """Start a run now, honouring the job's concurrency policy and the parallelism cap."""
        if request.job not in self.config.jobs:  # removed by a reload while queued
            self.log.warning("run dropped: job no longer configured", job=request.job)
            return None
        if not self.control.admit(self._daemon, request):
            return None
        spec = self.config.jobs[request.job]
        active = [h for h in self.active[request.job] if not h.finished.is_set()]
        schedule = self.config.schedules[request.job]
        if active and spec.concurrency == "queue":
            self.control.enqueue(self._daemon, request, active)
            return None
        if self.outbox is not None:
            return self._dispatch_claimed(request, spec, active)
        if active and spec.concurrency == "forbid":
            reason = f"previous run {active[0].run_id} still running (concurrency: forbid)"
            self.store.record_skipped(request.job, request.slot, request.data_interval(schedule)[2],
                                      request.trigger, reason)
            self.log.warning("run skipped", job=request.job, slot=request.slot.isoformat(), reason=reason)
            self._notify("on_slot", lambda ext: ext.on_slot(self._daemon, request.job, "skipped", 1))
            return None
        if self.running_count() >= self.config.daemon.max_parallel_runs:
            self.backlog.append(request)
            self.log.warning("run queued: parallel run limit reached", job=request.job,
                             limit=self.config.daemon.max_parallel_runs)
            return None
        predecessors: list[RunHandle] = []
        if active and spec.concurrency == "replace":
            for old in active:
                old.cancel("replaced by a newer run (concurrency: replace)")
            predecessors = active
        return self._start(request, predecessors)

    def _start(self, request: RunRequest, predecessors: list[RunHandle], run_id: int | None = None) -> RunHandle:
        handle = RunHandle(request)
        handle.run_id = run_id
        self.active[request.job].append(handle)
        self._notify("on_dispatched", lambda ext: ext.on_dispatched(self._daemon, handle))
        thread = threading.Thread(target=self._run_thread, args=(self.runner, handle, predecessors),
                                  name=f"run-{request.job}", daemon=True)
        thread.start()
        return handle

    def _dispatch_claimed(self, request: RunRequest, spec: Any, active: list[RunHandle]) -> RunHandle | None:
        """Dispatch on a store shared by replicas: claim ``(job, slot)`` first, start only a claimed run.

        Refused because another replica has (or had) the slot: nothing is recorded.  Refused by
        ``concurrency: forbid`` (a run of the job is active on any replica): the slot is recorded
        ``skipped`` if nobody recorded it yet, so of all replicas one row at most says so.  The
        database unreachable: the request waits in :attr:`unclaimed` and is claimed when it answers.
        """
        if self.running_count() >= self.config.daemon.max_parallel_runs:
            self.backlog.append(request)  # unclaimed: another replica with room may take the slot
            self.log.warning("run queued: parallel run limit reached", job=request.job,
                             limit=self.config.daemon.max_parallel_runs)
            return None
        logical_date = request.data_interval(self.config.schedules[request.job])[2]
        forbid = spec.concurrency == "forbid"
        # queue: a run active on another replica must not overlap either (the slot is not parked there)
        overlap = forbid or spec.concurrency == "queue"
        try:
            run_id = self.store.start_run(request.job, request.slot, logical_date, request.trigger,
                                          forbid_overlap=overlap,
                                          only_from=claim_mode(request.trigger, request.resumes))
            if run_id is None and forbid and self.store.find_run(request.job, request.slot) is None:
                reason = "a run of the job is still running (concurrency: forbid)"
                if self.store.record_skipped(request.job, request.slot, logical_date, request.trigger, reason,
                                             only_new=True):
                    self.log.warning("run skipped", job=request.job, slot=request.slot.isoformat(), reason=reason)
                    self._notify("on_slot", lambda ext: ext.on_slot(self._daemon, request.job, "skipped", 1))
        except StateError as exc:
            if self.keeper is not None:
                self.keeper.mark_down(str(exc))
            self.unclaimed.append(request)
            self.log.warning("claim failed; retried when the state database answers", job=request.job,
                             slot=request.slot.isoformat(), error=str(exc))
            return None
        if run_id is None:
            self.log.debug("slot claimed by another run", job=request.job, slot=request.slot.isoformat())
            return None
        predecessors: list[RunHandle] = []
        if active and spec.concurrency == "replace":  # this replica's own runs of the job
            for old in active:
                old.cancel("replaced by a newer run (concurrency: replace)")
            predecessors = active
        return self._start(request, predecessors, run_id)

    def _run_thread(self, runner: Runner, handle: RunHandle, predecessors: list[RunHandle]) -> None:
        for old in predecessors:
            old.finished.wait()
        runner.execute(handle.request, handle)  # records every outcome itself, never raises
        self.completed.append(handle)
        self.wake()

    def _finished(self, handle: RunHandle) -> None:
        job = handle.request.job
        if handle in self.active[job]:
            self.active[job].remove(handle)
        try:
            self.control.finished(self._daemon, handle)
        except StateError as exc:  # the store did not answer: the rest of the collection must still happen
            if self.keeper is not None:
                self.keeper.mark_down(str(exc))
            self.log.warning("run control after a finished run failed; the state store did not answer", job=job,
                             error=str(exc))
        self._notify("on_finished", lambda ext: ext.on_finished(self._daemon, handle))
        while self.backlog and self.running_count() < self.config.daemon.max_parallel_runs:
            self.dispatch(self.backlog.popleft())
        result = handle.result
        if (self.outbox is not None and result is not None and (result.error or "").startswith(LEASE_LOST)
                and job in self.config.jobs and self.config.jobs[job].catchup != "none" and not self.stop_signals):
            # given up for a lost lease: resumed here unless another replica took the slot over
            self.unclaimed.append(RunRequest(job=job, slot=handle.request.slot, trigger="catchup", resumes=True))
        if result is None or result.status != RunStatus.SUCCESS or self.stop_signals or job not in self.config.jobs:
            return
        if self.outbox is not None and self.outbox.pending:
            self.chains.append(handle)  # succeeded() must see the upstream's record first
            return
        self._chain(handle)

    def _chain(self, handle: RunHandle) -> None:
        """Dispatch the ``after:`` jobs whose upstreams all succeeded for this run's logical date."""
        job = handle.request.job
        if job not in self.config.jobs:
            return
        schedule = self.config.schedules[job]
        start, end, logical_date = handle.request.data_interval(schedule)
        interval = (start, end)
        for name in self.downstream.get(job, ()):
            spec = self.config.jobs[name]
            if spec.enabled:
                try:
                    ready = all(self.store.succeeded(up, logical_date) for up in spec.after)
                except StateError:
                    if self.outbox is None:
                        raise
                    self.chains.append(handle)  # looked at again when the database answers
                    return
                if ready:
                    self.log.info("triggering downstream job", job=name, upstream=job,
                                  logical_date=logical_date.isoformat())
                    self.dispatch(RunRequest(job=name, slot=handle.request.slot, trigger="after",
                                             interval=interval))
