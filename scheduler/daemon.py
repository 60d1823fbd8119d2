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

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from scheduler import clock
from scheduler.config.compiled import Config, load_compiled, spec_json
from scheduler.control import RuntimeControl
from scheduler.daemon_view import IDLE_TICK, DaemonExtension
from scheduler.errors import ConfigError
from scheduler.logs import Redactor, get_logger
from scheduler.planner import Planner
from scheduler.process import ChildTable, become_subreaper, limit_malloc_arenas
from scheduler.runner import Runner
from scheduler.runs import RunHandle, RunRequest
from scheduler.stores.protocol import StateStore

# how ``scheduler.kinds.container.engine.EngineUnavailable`` begins (the daemon never imports the SDK)
ENGINE_UNREACHABLE = "cannot reach the Docker engine at "
SHUTDOWN_REASON = "scheduler shutting down"


def downstream_of(config: Config) -> dict[str, tuple[str, ...]]:
    """For each job, the jobs that name it in ``after:``."""
    out: dict[str, list[str]] = defaultdict(list)
    for name, spec in config.jobs.items():
        for upstream in spec.after:
            out[upstream].append(name)
    return {k: tuple(v) for k, v in out.items()}


def heartbeat_path(data_dir: Path) -> Path:
    """File whose mtime the loop refreshes at least every ``IDLE_TICK``."""
    return data_dir / ".scheduler" / "heartbeat"


class Daemon:
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
        self.runner = Runner(config, store, data_dir, self.children, log_level)
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
    def startup(self) -> None:
        become_subreaper()
        limit_malloc_arenas()
        for record in self.store.abandon_running():
            self.log.warning("run abandoned", job=record.job, run_id=record.id,
                             reason="left running by a previous scheduler process")
        self.runner.sweep_result_files()  # after the records above: their files are stale now
        self._cleanup_container_orphans()
        self.planner.start(clock.now())
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
            if record.status == "abandoned" or (
                    record.status == "interrupted" and (record.error or "").startswith(SHUTDOWN_REASON)):
                self.log.info("resuming a slot the scheduler's stop interrupted", job=name,
                              slot=record.slot.isoformat(), previous_status=record.status)
                self.requested.append(RunRequest(job=name, slot=record.slot, trigger="catchup"))

    def _cleanup_container_orphans(self) -> None:
        """Remove containers of ours left by a crashed run (in a child: the daemon stays light)."""
        if not any(spec.kind == "container" for spec in self.config.jobs.values()):
            return
        try:
            out = subprocess.run([sys.executable, "-m", "scheduler.kinds.container.cleanup"],
                                 input=json.dumps(spec_json(self.config.docker)), capture_output=True, text=True,
                                 timeout=60)
            for line in out.stdout.splitlines():
                if line.strip():
                    self.log.warning("orphan container removed", detail=line.strip())
            if out.returncode != 0:
                error = (out.stderr.strip().splitlines() or ["no output"])[-1][-500:]
                if error.startswith(ENGINE_UNREACHABLE):
                    # not a cleanup problem: the container jobs themselves cannot run; say which and why
                    jobs = sorted(name for name, spec in self.config.jobs.items() if spec.kind == "container")
                    self.log.warning("container jobs need a Docker engine", jobs=jobs, error=error)
                else:
                    self.log.warning("orphan container cleanup failed", error=error)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.log.warning("orphan container cleanup failed", error=str(exc))

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
        self.control.step(self)
        while self.requested:
            self.dispatch(self.requested.popleft())
        for request in self.planner.due(clock.now()):
            self.dispatch(request)
        self.planner.persist()
        while self.planner.missed:
            job, count = self.planner.missed.pop(0)
            self.log.warning("slots missed", job=job, count=count, catchup=self.config.jobs[job].catchup)
            self._notify("on_slot", lambda ext: ext.on_slot(self, job, "missed", count))
        self._notify("on_tick", lambda ext: ext.on_tick(self))

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

    # --- runs ------------------------------------------------------------------------------
    def running_count(self) -> int:
        return sum(len(handles) for handles in self.active.values())

    def dispatch(self, request: RunRequest) -> RunHandle | None:
        """Start a run now, honouring the job's concurrency policy and the parallelism cap."""
        if request.job not in self.config.jobs:  # removed by a reload while queued
            self.log.warning("run dropped: job no longer configured", job=request.job)
            return None
        if not self.control.admit(self, request):
            return None
        spec = self.config.jobs[request.job]
        active = [h for h in self.active[request.job] if not h.finished.is_set()]
        schedule = self.config.schedules[request.job]
        if active and spec.concurrency == "queue":
            self.control.enqueue(self, request, active)
            return None
        if active and spec.concurrency == "forbid":
            reason = f"previous run {active[0].run_id} still running (concurrency: forbid)"
            self.store.record_skipped(request.job, request.slot, request.data_interval(schedule)[2],
                                      request.trigger, reason)
            self.log.warning("run skipped", job=request.job, slot=request.slot.isoformat(), reason=reason)
            self._notify("on_slot", lambda ext: ext.on_slot(self, request.job, "skipped", 1))
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
        handle = RunHandle(request)
        self.active[request.job].append(handle)
        runner = self.runner
        thread = threading.Thread(target=self._run_thread, args=(runner, handle, predecessors),
                                  name=f"run-{request.job}", daemon=True)
        thread.start()
        return handle

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
        self.control.finished(self, handle)
        self._notify("on_finished", lambda ext: ext.on_finished(self, handle))
        while self.backlog and self.running_count() < self.config.daemon.max_parallel_runs:
            self.dispatch(self.backlog.popleft())
        result = handle.result
        if result is None or result.status != "success" or self.stop_signals or job not in self.config.jobs:
            return
        schedule = self.config.schedules[job]
        start, end, logical_date = handle.request.data_interval(schedule)
        interval = (start, end)
        for name in self.downstream.get(job, ()):
            spec = self.config.jobs[name]
            if spec.enabled:
                if all(self.store.succeeded(up, logical_date) for up in spec.after):
                    self.log.info("triggering downstream job", job=name, upstream=job,
                                  logical_date=logical_date.isoformat())
                    self.dispatch(RunRequest(job=name, slot=handle.request.slot, trigger="after",
                                             interval=interval))

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
            config = load_compiled(self.config_path)
        except ConfigError as exc:
            for issue in exc.issues:
                self.log.error("config reload failed; keeping the running config", problem=str(issue))
            return
        carry = dict(self.planner.cursor)
        self.config = config
        self.runner = Runner(config, self.store, self.data_dir, self.children, self.log_level)
        self.planner = Planner(config, self.store)
        self.planner.start(clock.now(), carry={k: v for k, v in carry.items() if k in config.jobs})
        self.control.replanned(self)
        self.downstream = downstream_of(config)
        if self.redactor is not None:
            self.redactor.set_secrets(config.secrets)
        self.log.info("config reloaded", jobs=len(config.jobs), config_digest=config.digest)

    def shutdown(self, selector: selectors.BaseSelector) -> int:
        handles = [h for hs in self.active.values() for h in hs if not h.finished.is_set()]
        grace = self.config.daemon.shutdown_grace.total_seconds()
        self.log.info("shutting down", running=len(handles), grace=grace)
        for request in self.backlog:  # recorded, so the next start can resume them
            schedule = self.config.schedules[request.job]
            self.store.record_skipped(request.job, request.slot, request.data_interval(schedule)[2],
                                      request.trigger, f"{SHUTDOWN_REASON} (the run was queued)", "interrupted")
        self.backlog.clear()
        self.control.stop(lambda request: self.store.record_skipped(
            request.job, request.slot, request.data_interval(self.config.schedules[request.job])[2], request.trigger,
            f"{SHUTDOWN_REASON} (the run was waiting: concurrency: queue)", "interrupted"))
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
            self._cleanup_container_orphans()
        self.children.reap_orphans()
        self._notify("on_shutdown", lambda ext: ext.on_shutdown(self))
        self.log.info("scheduler stopped")
        return 0
