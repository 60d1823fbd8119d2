"""Prometheus metrics of one daemon, in a registry of its own (never the process-global one).

Every metric is labelled by job *name* (never by command or URL, which may hold secrets and
would explode cardinality).  All updates happen on the loop thread (``on_tick``/``on_finished``);
the HTTP thread only renders the registry, which prometheus-client makes safe to do concurrently.
Skipped and missed slots arrive through the daemon's ``on_slot`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from scheduler import __version__, clock
from scheduler.ops.ext import Extension
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView
    from scheduler.runs import RunHandle

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))


class OpsMetrics(Extension):
    """The daemon's metrics, updated from the loop's hooks; render with :meth:`render`."""

    name = "metrics"

    def __init__(self, daemon: DaemonView) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter("scheduler_runs_total", "Finished runs by job and final status",
                            ["job", "status"], registry=r)
        self.duration = Histogram("scheduler_run_duration_seconds", "Run duration (all attempts) by job",
                                  ["job"], buckets=DURATION_BUCKETS, registry=r)
        self.last_success = Gauge("scheduler_last_success_timestamp_seconds",
                                  "Unix time of the job's last successful run", ["job"], registry=r)
        self.running = Gauge("scheduler_running_runs", "Runs in progress by job", ["job"], registry=r)
        self.rows_written = Counter("scheduler_rows_written_total", "Rows written by job", ["job"], registry=r)
        self.rows_rejected = Counter("scheduler_rows_rejected_total", "Rows rejected by job", ["job"], registry=r)
        self.skipped = Counter("scheduler_skipped_slots_total",
                               "Slots not run because a previous run was active (concurrency: forbid)",
                               ["job"], registry=r)
        self.missed = Counter("scheduler_missed_slots_total",
                              "Slots passed over by the catch-up policy (downtime, clock jumps)", ["job"], registry=r)
        self.retries = Counter("scheduler_retries_total", "Retry attempts by job", ["job"], registry=r)
        self.paused = Gauge("scheduler_job_paused", "1 while the job is paused (scheduler pause, pause_after_failures)",
                            ["job"], registry=r)
        self.overdue = Gauge("scheduler_job_overdue",
                             "1 when the job has not succeeded within expect_success_within", ["job"], registry=r)
        self.last_tick = Gauge("scheduler_loop_last_tick_timestamp_seconds",
                               "Unix time of the scheduling loop's last step", registry=r)
        self.alerts = Counter("scheduler_alerts_total", "Alert deliveries by event and outcome",
                              ["event", "outcome"], registry=r)
        self.info = Info("scheduler", "Scheduler version and config digest", registry=r)
        self._digest = ""
        self._known: set[str] = set()
        self._running_set: dict[str, int] = {}  # the running gauges last set above 0
        self._paused_set: set[str] = set()  # the paused gauges last set to 1
        self._sync_jobs(daemon)
        for name in daemon.config.jobs:
            when = daemon.store.last_success(name)
            if when is not None:
                self.last_success.labels(name).set(when.timestamp())

    def _sync_jobs(self, daemon: DaemonView) -> None:
        """Create the per-job series of newly configured jobs (so they show 0, not nothing)."""
        if daemon.config.digest != self._digest:
            self._digest = daemon.config.digest
            self.info.info({"version": __version__, "config_digest": daemon.config.digest})
        for name in daemon.config.jobs:
            if name not in self._known:
                self._known.add(name)
                for metric in (self.rows_written, self.rows_rejected, self.skipped, self.missed, self.retries):
                    metric.labels(name)
                self.running.labels(name).set(0)
                self.paused.labels(name).set(0)
                self._running_set.pop(name, None)
                self._paused_set.discard(name)

    def _set_running(self, daemon: DaemonView) -> None:
        """Set the running gauges that changed since the last tick: the loop steps many times a
        second with a thousand jobs, so the work is per active job, not per configured job."""
        counts = {name: n for name, handles in list(daemon.active.items())
                  if name in self._known and (n := sum(1 for h in list(handles) if not h.finished.is_set()))}
        for name in self._running_set.keys() | counts.keys():
            if self._running_set.get(name) != counts.get(name):
                self.running.labels(name).set(counts.get(name, 0))
        self._running_set = counts

    def tick(self, daemon: DaemonView) -> None:
        self.last_tick.set(daemon.last_tick.timestamp())
        self._sync_jobs(daemon)
        self._set_running(daemon)
        paused = {name for name in daemon.paused if name in self._known}
        for name in paused ^ self._paused_set:
            self.paused.labels(name).set(1 if name in paused else 0)
        self._paused_set = paused

    def slot(self, daemon: DaemonView, job: str, outcome: str, count: int) -> None:
        (self.skipped if outcome == "skipped" else self.missed).labels(job).inc(count)

    def finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        job = handle.request.job
        result = handle.result
        status = result.status if result is not None else RunStatus.FAILED
        self.runs.labels(job, status).inc()
        if result is None:
            return
        self.duration.labels(job).observe(result.duration)
        if result.attempt > 1:
            self.retries.labels(job).inc(result.attempt - 1)
        if status == RunStatus.SUCCESS:
            self.last_success.labels(job).set(clock.now().timestamp())
        for key, metric in (("rows_written", self.rows_written), ("rows_rejected", self.rows_rejected)):
            value = result.metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                metric.labels(job).inc(value)
        self._set_running(daemon)

    def set_overdue(self, job: str, overdue: bool) -> None:
        self.overdue.labels(job).set(1 if overdue else 0)

    def count_alert(self, event: str, outcome: str) -> None:
        self.alerts.labels(event, outcome).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (safe from any thread)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
