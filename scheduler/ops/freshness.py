"""Freshness rules: ``expect_success_within: 26h`` alerts when a job has not succeeded in time.

The reference point is the job's last success in the state store, or the daemon's start when
there is none (a job that never ran becomes overdue ``expect_success_within`` after start).

Invariants:
* one alert per breach: a job alerts when it turns overdue and not again until a success (seen
  by the daemon or recorded by another process, such as ``backfill`` or ``run-job``) ends the
  breach; a restart forgets open breaches, so an overdue job alerts once more after a restart;
* checks run on the loop thread at each step, so their precision is the loop's tick (30 s idle
  at most); the store is queried only for jobs that look overdue from the cached success time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.config.durations import format_duration
from scheduler.ops.alerts import AlertSender
from scheduler.ops.ext import Extension

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView
    from scheduler.runs import RunHandle


class FreshnessWatch(Extension):
    """Tracks per-job success times and open breaches; alerts through the ``on_failure`` notifiers."""

    name = "freshness"

    def __init__(self, sender: AlertSender, started: datetime,
                 on_change: Callable[[str, bool], None] | None = None) -> None:
        self.sender = sender
        self.started = started
        self.on_change = on_change
        self._last_success: dict[str, datetime | None] = {}
        self.breached: set[str] = set()

    def _known_success(self, daemon: DaemonView, job: str) -> datetime | None:
        if job not in self._last_success:
            self._last_success[job] = daemon.store.last_success(job)
        return self._last_success[job]

    def tick(self, daemon: DaemonView) -> None:
        now = clock.now()
        watched = set()
        for name, spec in daemon.config.jobs.items():
            within: timedelta | None = spec.expect_success_within
            if within is None or not spec.enabled:
                continue
            watched.add(name)
            last = self._known_success(daemon, name)
            if now - (last or self.started) <= within:
                self._clear(daemon, name)
                continue
            # Looks overdue: another process may have succeeded meanwhile; ask the store.
            last = self._last_success[name] = daemon.store.last_success(name)
            if now - (last or self.started) <= within:
                self._clear(daemon, name)
            elif name not in self.breached:
                self._breach(daemon, name, within, last, now)
        for name in list(self.breached - watched):
            self._clear(daemon, name)

    def finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        result = handle.result
        if result is not None and result.status == "success":
            self._last_success[handle.request.job] = clock.now()

    def _clear(self, daemon: DaemonView, name: str) -> None:
        if name in self.breached:
            self.breached.discard(name)
            daemon.log.info("job fresh again", job=name)
        self._notify(name, False)

    def _notify(self, name: str, overdue: bool) -> None:
        if self.on_change is not None:
            self.on_change(name, overdue)

    def _breach(self, daemon: DaemonView, name: str, within: timedelta, last: datetime | None, now: datetime) -> None:
        self.breached.add(name)
        self._notify(name, True)
        since = last or self.started
        late = format_duration(timedelta(seconds=int((now - since - within).total_seconds())))
        if last is None:
            text = (f"[FRESHNESS] job {name} has not succeeded within {format_duration(within)}: "
                    f"no success recorded (watching since scheduler start at {self.started.isoformat()})")
        else:
            text = (f"[FRESHNESS] job {name} has not succeeded within {format_duration(within)}: "
                    f"last success {last.isoformat()}, {late} overdue")
        daemon.log.warning("job overdue", job=name, expect_success_within=format_duration(within),
                           last_success=last.isoformat() if last else None)
        latest = daemon.store.last_runs().get(name)
        payload: dict[str, Any] = {
            "job": name, "freshness": True, "text": text,
            "expect_success_within": format_duration(within),
            "expect_success_within_seconds": within.total_seconds(),
            "last_success": last.isoformat() if last else None,
            "measured_from": since.isoformat(),
            "run_id": latest.id if latest else None,
            "logical_date": latest.logical_date.isoformat() if latest else None,
            "attempt": latest.attempt if latest else None,
            "status": latest.status if latest else None,
            "duration": latest.duration if latest else None,
            "error": latest.error if latest else None,
            "last_lines": list(latest.metrics.get("last_lines") or []) if latest else [],
        }
        self.sender.send("freshness", daemon.config.jobs[name].on_failure, payload)
