"""Prometheus metrics of one daemon, in a registry of its own (never the process-global one).

Every metric is labelled by job *name* (never by command or URL, which may hold secrets and
would explode cardinality).  All updates happen on the loop thread (``on_tick``/``on_finished``);
the HTTP thread only renders the registry, which prometheus-client makes safe to do concurrently.

Skipped and missed slots are not reported by the loop directly; :class:`SlotWatcher` derives them
after each step from the planner's cursor: every slot the cursor passed over is either in flight
(a handle or a backlog entry the step just created), recorded as ``skipped`` (concurrency
``forbid``), or missed (passed over by the catch-up policy).
"""

from __future__ import annotations

import collections
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from scheduler import __version__, clock
from scheduler.ops.ext import Extension

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
_COUNT_CAP = 5_000  # slots counted per cursor move; beyond it the count is a lower bound


class SlotWatcher:
    """Classifies the slots the planner's cursor moved over since the previous step."""

    def __init__(self, cursors: dict[str, datetime] | None = None) -> None:
        self._cursor: dict[str, datetime] = dict(cursors or {})

    def observe(self, daemon: Any) -> list[tuple[str, int, int]]:
        """``(job, skipped, missed)`` for each job whose cursor moved since the last call."""
        out: list[tuple[str, int, int]] = []
        for name, cursor in list(daemon.planner.cursor.items()):
            if cursor is None:
                continue
            previous = self._cursor.get(name)
            self._cursor[name] = cursor
            if previous is None or cursor <= previous or name not in daemon.config.jobs:
                continue
            skipped, missed = self._classify(daemon, name, previous, cursor)
            if skipped or missed:
                out.append((name, skipped, missed))
        return out

    @staticmethod
    def _classify(daemon: Any, name: str, previous: datetime, cursor: datetime) -> tuple[int, int]:
        schedule = daemon.config.schedules[name]
        spec = daemon.config.jobs[name]
        # Only the newest max_catchup + 1 slots can have fired in one step; older ones were missed.
        recent: collections.deque[datetime] = collections.deque(maxlen=spec.max_catchup + 1)
        total = 0
        if schedule.every is not None:
            total = int((cursor - previous) // schedule.every)
            first = cursor - (min(total, recent.maxlen or 1) - 1) * schedule.every
            slot = first
            while slot <= cursor and total:
                recent.append(slot)
                slot += schedule.every
        else:
            for slot in schedule.iter_after(previous):
                if slot > cursor or total >= _COUNT_CAP:
                    break
                total += 1
                recent.append(slot)
        in_flight = {h.request.slot for h in list(daemon.active.get(name) or ())}
        in_flight |= {r.slot for r in list(daemon.backlog) if r.job == name}
        skipped = fired = 0
        for slot in recent:
            if slot in in_flight:
                fired += 1
                continue
            record = daemon.store.find_run(name, slot)
            if record is None:
                continue
            if record.status == "skipped":
                skipped += 1
            else:
                fired += 1
        return skipped, max(0, total - fired - skipped)


class OpsMetrics(Extension):
    """The daemon's metrics, updated from the loop's hooks; render with :meth:`render`."""

    name = "metrics"

    def __init__(self, daemon: Any) -> None:
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
        self.overdue = Gauge("scheduler_job_overdue",
                             "1 when the job has not succeeded within expect_success_within", ["job"], registry=r)
        self.last_tick = Gauge("scheduler_loop_last_tick_timestamp_seconds",
                               "Unix time of the scheduling loop's last step", registry=r)
        self.alerts = Counter("scheduler_alerts_total", "Alert deliveries by event and outcome",
                              ["event", "outcome"], registry=r)
        self.info = Info("scheduler", "Scheduler version and config digest", registry=r)
        self._digest = ""
        self._known: set[str] = set()
        # Start from the persisted cursors the planner is about to load, so slots missed while
        # the scheduler was down count too.
        fired = {name: daemon.store.last_fired(name) for name in daemon.config.jobs}
        self._slots = SlotWatcher({name: slot for name, slot in fired.items() if slot is not None})
        self._sync_jobs(daemon)
        for name in daemon.config.jobs:
            when = daemon.store.last_success(name)
            if when is not None:
                self.last_success.labels(name).set(when.timestamp())

    def _sync_jobs(self, daemon: Any) -> None:
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

    def _set_running(self, daemon: Any) -> None:
        for name in self._known:
            handles = daemon.active.get(name) or ()
            self.running.labels(name).set(sum(1 for h in handles if not h.finished.is_set()))

    def tick(self, daemon: Any) -> None:
        self.last_tick.set(daemon.last_tick.timestamp())
        self._sync_jobs(daemon)
        self._set_running(daemon)
        for name, skipped, missed in self._slots.observe(daemon):
            if skipped:
                self.skipped.labels(name).inc(skipped)
            if missed:
                self.missed.labels(name).inc(missed)

    def finished(self, daemon: Any, handle: Any) -> None:
        job = handle.request.job
        result = handle.result
        status = result.status if result is not None else "failed"
        self.runs.labels(job, status).inc()
        if result is None:
            return
        self.duration.labels(job).observe(result.duration)
        if result.attempt > 1:
            self.retries.labels(job).inc(result.attempt - 1)
        if status == "success":
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
