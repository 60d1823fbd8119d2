"""The foreground PID-1 loop: fire due slots, apply concurrency policy, chain ``after:`` jobs.

Signal handlers only set flags; ``signal.set_wakeup_fd`` turns each signal into a byte on a pipe
the loop sleeps on, so the loop (never a handler) does the work:

* SIGTERM/SIGINT: stop firing, SIGTERM every run's process group, wait up to ``shutdown_grace``,
  SIGKILL the rest, record them ``interrupted``, return 0.  A second signal kills at once.
* SIGHUP: reload the config; a bad new config is logged and the old one kept.
* SIGCHLD: reap orphaned grandchildren (we are PID 1 or a child subreaper) without touching the
  exit status of our own children.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.config.compiled import Config, load_compiled, spec_json
from scheduler.control import RuntimeControl
from scheduler.daemon_view import IDLE_TICK, DaemonExtension
from scheduler.dispatch import Dispatch, downstream_of
from scheduler.errors import ConfigError, StateError
from scheduler.forkserver import ForkServer
from scheduler.kinds.hooks import run_hooks
from scheduler.kinds.registry import HookStage
from scheduler.logs import Redactor, get_logger
from scheduler.planner import Planner
from scheduler.process import ChildTable, become_subreaper, limit_malloc_arenas
from scheduler.replica import LeaseKeeper, Outbox, claim_mode, shared
from scheduler.runner import Runner
from scheduler.runs import RunHandle, RunRequest
from scheduler.status import RunStatus
from scheduler.stores.protocol import StateStore

if TYPE_CHECKING:
    from scheduler.state import RunRecord

SHUTDOWN_REASON = "scheduler shutting down"


def heartbeat_path(data_dir: Path) -> Path:
    """File whose mtime the loop refreshes at least every ``IDLE_TICK``."""
    return data_dir / ".scheduler" / "heartbeat"


class Daemon(Dispatch):
    """One scheduler process.  Construct, then :meth:`serve` until a stop signal."""

    def __init__(self, config: Config, config_path: Path, data_dir: Path, store: StateStore,
                 redactor: Redactor | None = None, log_level: str = "info") -> None:
        self.config = config
        self.config_path = config_path
        self.data_dir = data_dir
        self.store = store
        self.redactor = redactor
        self.log_level = log_level
        self.log = get_logger()
        self.children = ChildTable()
        self.forkserver = ForkServer(self.children)  # started on the first worker run
        # Several replicas on one PostgreSQL store: claims before dispatch, leases kept by a
        # thread of their own, records kept through an outage (see scheduler.replica).
        self.outbox: Outbox | None = Outbox(store) if shared(config) else None
        self.keeper: LeaseKeeper | None = None
        self.unclaimed: deque[RunRequest] = deque()  # claims that failed for lack of the database
        self.chains: deque[RunHandle] = deque()  # finished runs whose after: chain waits for records
        self.runner = Runner(config, self._records(), data_dir, self.children, log_level, forkserver=self.forkserver)
        self.planner = Planner(config, store)
        self.downstream = downstream_of(config)
        self.active: dict[str, list[RunHandle]] = defaultdict(list)
        self.backlog: deque[RunRequest] = deque()
        self.completed: deque[RunHandle] = deque()
        self.requested: deque[RunRequest] = deque()  # from other threads (HTTP API); dispatched by the loop
        self.last_tick = clock.now()
        self.stop_signals = 0
        self.reload_requested = False
        self.reap_requested = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.heartbeat = heartbeat_path(data_dir)
        # Extensions (operations features) get hooks on the loop thread, and must return quickly;
        # see scheduler.daemon_view for the hooks and for what of the daemon they may use.
        self.extensions: list[DaemonExtension] = []
        self.control = RuntimeControl(store)  # pause/resume, run requests, concurrency: queue

    # --- signals ---------------------------------------------------------------------------
    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop_signals += 1  # flag only; the loop acts

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload_requested = True

    def _on_chld(self, signum: int, frame: Any) -> None:
        self.reap_requested = True

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, self._on_chld)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already due to wake

    # --- lifecycle -------------------------------------------------------------------------
    def _records(self) -> StateStore:
        """Where runners record: the outbox of a replica, else the store itself."""
        return self.outbox.as_store() if self.outbox is not None else self.store

    def record_not_run(self, request: RunRequest, reason: str, status: RunStatus = RunStatus.SKIPPED) -> bool:
        """Record a slot this daemon does not run (paused, a second waiting run, shutdown).

        With replicas it goes through the outbox (an outage loses nothing) and only for a slot that
        nobody recorded yet, so it never overwrites another replica's record of that slot.
        """
        logical_date = request.data_interval(self.config.schedules[request.job])[2]
        return self._records().record_skipped(request.job, request.slot, logical_date, request.trigger, reason,
                                              status, only_new=self.outbox is not None)

    def startup(self) -> None:
        become_subreaper()
        limit_malloc_arenas()
        abandoned = self.store.abandon_running()  # held() rules: never a live replica's run
        for record in abandoned:
            self.log.warning("run abandoned", job=record.job, run_id=record.id, slot=record.slot.isoformat(),
                             reason="left running by a previous scheduler process")
        self.runner.sweep_result_files()  # after the records above: their files are stale now
        self._kind_hooks("start")
        self.planner.start(clock.now())
        if self.outbox is not None:
            self.keeper = LeaseKeeper(self.store, held=self._held_runs, on_lost=self._leases_lost,
                                      on_expired=self._leases_expired, on_up=self.wake).start()
            self._resume(abandoned)
        self._resume_stopped_slots()
        self.control.start(self)
        self.log.info("scheduler started", jobs=len(self.config.jobs), config=",".join(self.config.sources),
                      config_digest=self.config.digest, pid=os.getpid(), data_dir=str(self.data_dir))

    def _resume_stopped_slots(self) -> None:
        """Run a scheduled job's latest run again if the scheduler's own stop (or crash) cut it short.

        Only each job's newest run counts (slots skipped meanwhile by ``concurrency: forbid`` do
        not hide it), and only for ``catchup`` other than ``none``: a redeploy at 02:20 must not
        lose the 02:15 ingest.
        """
        latest = self.store.last_runs()
        for name in self.planner.cursor:
            record = latest.get(name)
            if record is None or self.config.jobs[name].catchup == "none":
                continue
            if record.status == RunStatus.ABANDONED or (
                    record.status == RunStatus.INTERRUPTED and (record.error or "").startswith(SHUTDOWN_REASON)):
                self.log.info("resuming a slot the scheduler's stop interrupted", job=name,
                              slot=record.slot.isoformat(), previous_status=record.status)
                # with replicas, a resume claims only the row still cut short: it runs once
                self.requested.append(RunRequest(job=name, slot=record.slot, trigger="catchup",
                                                 resumes=self.outbox is not None))

    def _resume(self, records: list[RunRecord]) -> None:
        """Thread-safe: run again, per the job's ``catchup``, the slots of runs abandoned by this
        replica (each abandoned run is returned to exactly one replica, and resumed by it)."""
        config = self.config
        for record in records:
            spec = config.jobs.get(record.job)
            if spec is not None and spec.catchup != "none":
                self.log.info("resuming an abandoned run's slot", job=record.job, slot=record.slot.isoformat(),
                              run_id=record.id)
                self.requested.append(RunRequest(job=record.job, slot=record.slot, trigger="catchup", resumes=True))
        self.wake()

    # --- replicas (the keeper's callbacks run on its thread) -----------------------------------
    def _held_runs(self) -> set[int]:
        return {h.run_id for hs in list(self.active.values()) for h in list(hs)
                if h.run_id is not None and not h.finished.is_set()}

    def _leases_lost(self, run_ids: set[int], reason: str) -> None:
        for handles in list(self.active.values()):
            for handle in list(handles):
                if handle.run_id in run_ids and handle.cancel_reason is None:
                    self.log.error("stopping a run whose lease is lost", job=handle.request.job, run_id=handle.run_id,
                                   reason=reason)
                    handle.cancel(reason)

    def _leases_expired(self, records: list[RunRecord]) -> None:
        for record in records:
            self.log.warning("run abandoned", job=record.job, run_id=record.id, slot=record.slot.isoformat(),
                             reason=record.error)
        self._resume(records)

    def _kind_hooks(self, stage: HookStage) -> None:
        """The kinds' own steps for ``stage`` (orphan container cleanup), each in a child process."""
        run_hooks(self.runner.registry, stage, {name: spec.kind for name, spec in self.config.jobs.items()},
                  lambda section: spec_json(getattr(self.config, section)), self.log)

    def serve(self) -> int:
        """Run until stopped; returns the process exit code (0 after a clean shutdown)."""
        self.install_signals()
        self.startup()
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while self.stop_signals == 0:
                try:
                    self.step()
                except Exception as exc:  # noqa: BLE001 - PID 1 must not die of one bad step (a locked db)
                    self.log.exception("scheduler loop step failed; continuing", error=str(exc))
                now = clock.now()
                wakeup = self.planner.next_wakeup(now, IDLE_TICK)
                timeout = max(0.0, (wakeup - clock.now()).total_seconds())
                if selector.select(timeout):
                    self._drain()
            return self.shutdown(selector)
        finally:
            selector.close()
            signal.set_wakeup_fd(-1)

    def _drain(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def step(self) -> None:
        """One pass of the loop: reap, reload, collect finished runs, fire due slots."""
        self.last_tick = clock.now()
        self._beat()
        if self.reap_requested:
            self.reap_requested = False
            self.children.reap_orphans()
        if self.reload_requested:
            self.reload_requested = False
            self.reload()
        while self.completed:
            self._finished(self.completed.popleft())
        if self.outbox is not None and not self._replica_step():
            self._notify("on_tick", lambda ext: ext.on_tick(self))
            return  # the database is unreachable: no claims, so no firing (the planner waits)
        self.control.step(self)
        while self.requested:
            self.dispatch(self.requested.popleft())
        for request in self.planner.due(clock.now()):
            self.dispatch(request)
        try:
            self.planner.persist()
        except StateError as exc:
            if self.keeper is None:
                raise
            self.keeper.mark_down(str(exc))  # kept: persisted on a later step
        while self.planner.missed:
            job, count = self.planner.missed.pop(0)
            self.log.warning("slots missed", job=job, count=count, catchup=self.config.jobs[job].catchup)
            self._notify("on_slot", functools.partial(self._on_missed, job=job, count=count))
        self._notify("on_tick", lambda ext: ext.on_tick(self))

    def _replica_step(self) -> bool:
        """Write the records kept through an outage, retry failed claims and deferred ``after:``
        chains; False while the database is unreachable (nothing may be claimed)."""
        assert self.outbox is not None
        if self.keeper is not None and self.keeper.down_reason is not None:
            return False
        if self.outbox.pending and self.outbox.flush():
            return False
        for _ in range(len(self.chains)):
            self._chain(self.chains.popleft())
        for _ in range(len(self.unclaimed)):
            self.dispatch(self.unclaimed.popleft())
        return self.keeper is None or self.keeper.down_reason is None

    def _on_missed(self, ext: DaemonExtension, job: str, count: int) -> None:
        ext.on_slot(self, job, "missed", count)

    def _notify(self, hook: str, call: Callable[[DaemonExtension], None]) -> None:
        """``call`` every extension's ``hook``; a failing extension never stops the loop."""
        for ext in self.extensions:
            try:
                call(ext)
            except Exception as exc:  # noqa: BLE001 - the loop must survive its extensions
                self.log.error("extension failed", extension=type(ext).__name__, hook=hook, error=str(exc))

    def _beat(self) -> None:
        """Touch the heartbeat file ``scheduler health`` reads (the loop is alive)."""
        try:
            os.utime(self.heartbeat)
        except FileNotFoundError:
            self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
            self.heartbeat.touch()
        except OSError:
            pass

    @property
    def paused(self) -> frozenset[str]:
        """The jobs paused (``scheduler pause``, ``pause_after_failures``), as the loop last read them."""
        return frozenset(self.control.paused)

    def request_run(self, job: str, trigger: str = "api", day: date | None = None) -> RunRequest:
        """Thread-safe: queue a run of ``job`` for its most recent slot (or the slot of logical date
        ``day``); the loop dispatches it."""
        schedule = self.config.schedules[job]
        slot = schedule.slot_for_date(day) if day is not None else schedule.latest_slot(clock.now())
        request = RunRequest(job=job, slot=slot, trigger=trigger)
        self.requested.append(request)
        self.wake()
        return request

    # --- reload and shutdown ---------------------------------------------------------------
    def reload(self) -> None:
        try:
            config = load_compiled(self.config_path, cache=None)  # the daemon stays light: see App.load
        except ConfigError as exc:
            for issue in exc.issues:
                self.log.error("config reload failed; keeping the running config", problem=str(issue))
            return
        carry = dict(self.planner.cursor)
        self.config = config
        self.runner = Runner(config, self._records(), self.data_dir, self.children, self.log_level,
                             forkserver=self.forkserver)
        self.planner = Planner(config, self.store)
        self.planner.start(clock.now(), carry={k: v for k, v in carry.items() if k in config.jobs})
        self.control.replanned(self)
        self.downstream = downstream_of(config)
        if self.redactor is not None:
            self.redactor.set_secrets(config.secrets)
        self.log.info("config reloaded", jobs=len(config.jobs), config_digest=config.digest)

    def _stop_replica(self, deadline: float) -> None:
        """Write the records kept through an outage (until ``deadline``), then stop renewing."""
        if self.outbox is not None:
            while self.outbox.pending and self.outbox.flush() and clock.monotonic() < deadline:
                threading.Event().wait(0.2)
            if self.outbox.pending:
                self.log.error("run records not written: the state database did not answer",
                               count=self.outbox.pending)
        if self.keeper is not None:
            self.keeper.stop()
            self.keeper = None

    def shutdown(self, selector: selectors.BaseSelector) -> int:
        handles = [h for hs in self.active.values() for h in hs if not h.finished.is_set()]
        grace = self.config.daemon.shutdown_grace.total_seconds()
        self.log.info("shutting down", running=len(handles), grace=grace)
        def record_unstarted(request: RunRequest, why: str) -> None:
            """Recorded, so the next start can resume it; never for a job a reload removed, nor (with
            replicas) for a slot this replica never claimed: it is still open to the others."""
            if request.job not in self.config.jobs:
                return
            if self.outbox is not None and claim_mode(request.trigger, request.resumes) is not None:
                return
            self.record_not_run(request, f"{SHUTDOWN_REASON} ({why})", RunStatus.INTERRUPTED)

        for request in self.backlog:
            record_unstarted(request, "the run was queued")
        self.backlog.clear()
        self.control.stop(lambda request: record_unstarted(request, "the run was waiting: concurrency: queue"))
        for handle in handles:
            handle.cancel(SHUTDOWN_REASON, grace=grace)
        deadline = clock.monotonic() + grace + 1.0
        escalated = False
        while any(not h.finished.is_set() for h in handles):
            remaining = deadline - clock.monotonic()
            if (self.stop_signals > 1 or remaining <= 0) and not escalated:
                escalated = True
                self.log.warning("killing remaining runs", running=sum(not h.finished.is_set() for h in handles))
                for handle in handles:
                    handle.kill()
                deadline = clock.monotonic() + 5.0
            elif escalated and remaining <= 0:
                break
            if selector.select(min(0.05, max(remaining, 0.0))):
                self._drain()
            if self.reap_requested:
                self.reap_requested = False
                self.children.reap_orphans()
        while self.completed:
            self._finished(self.completed.popleft())
        if escalated:  # killed workers could not stop their containers themselves
            self._kind_hooks("forced_stop")
        self._stop_replica(deadline=clock.monotonic() + grace + 1.0)
        self.forkserver.close()
        self.children.reap_orphans()
        self._notify("on_shutdown", lambda ext: ext.on_shutdown(self))
        self.log.info("scheduler stopped")
        return 0
