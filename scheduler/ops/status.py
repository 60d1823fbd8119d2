"""``scheduler status``: each job's last run, next fire time and failure streak.

:func:`job_summaries` is shared with the HTTP API's ``GET /jobs``; it only reads (the config and
the state store), so it is safe beside a running daemon, in another process or another thread.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.config.compiled import Config
from scheduler.config.durations import format_duration

if TYPE_CHECKING:
    from scheduler.stores.protocol import StateStore


def _iso(t: datetime | None, tz: Any = None) -> str | None:
    if t is None:
        return None
    return t.astimezone(tz).isoformat() if tz is not None else t.isoformat()


def job_summaries(config: Config, store: StateStore, now: datetime | None = None,
                  upcoming: int = 1) -> list[dict[str, Any]]:
    """One JSON-ready dict per configured job, in config order.

    Keys: ``job``, ``kind``, ``enabled``, ``schedule``, ``timezone``, ``after``, ``next`` (up to
    ``upcoming`` fire times, job timezone), ``last_run`` (the newest non-skipped record or None),
    ``last_success``, ``failure_streak``, ``expect_success_within``, ``overdue`` (None when
    the job has no freshness rule or has never succeeded: without the daemon's start time this
    process cannot tell), ``paused`` and ``paused_reason`` (from the store: every replica agrees).
    """
    from scheduler.planner import next_fire_times

    now = now or clock.now()
    last_runs = store.last_runs()
    controls = {job: c for job, c in store.job_controls().items() if c.paused}
    out: list[dict[str, Any]] = []
    for name, spec in config.jobs.items():
        schedule = config.schedules[name]
        record = last_runs.get(name)
        last_success = store.last_success(name)
        within = spec.expect_success_within
        overdue = None if within is None or last_success is None else (now - last_success > within)
        fires = next_fire_times(config, name, now, upcoming) if spec.enabled else []
        out.append({
            "job": name, "kind": spec.kind, "enabled": spec.enabled, "schedule": schedule.describe(),
            "timezone": spec.timezone, "after": list(spec.after),
            "next": [_iso(t, schedule.tz) for t in fires],
            "last_run": record.as_json() if record is not None else None,
            "last_success": _iso(last_success),
            "failure_streak": store.failure_streak(name),
            "expect_success_within": format_duration(within) if within is not None else None,
            "overdue": overdue,
            "paused": name in controls,
            "paused_reason": controls[name].reason if name in controls else None,
        })
    return out


def _when(text: str | None) -> str:
    if not text:
        return "-"
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def cmd_status(args: argparse.Namespace) -> int:
    from scheduler.app.context import App, Options

    with App.inspect(Options.from_args(args)) as app:
        rows = job_summaries(app.config, app.store)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from scheduler.ops.tables import print_table

    table = []
    for row in rows:
        last = row["last_run"] or {}
        duration = last.get("duration")
        next_fire = row["next"][0] if row["next"] else (f"after {', '.join(row['after'])}" if row["after"] else "-")
        streak = row["failure_streak"]
        table.append([
            row["job"] + ("" if row["enabled"] else " (disabled)") + (" (paused)" if row["paused"] else ""),
            str(last.get("status", "never run")) + (" (overdue)" if row["overdue"] else ""),
            _when(last.get("started_at")),
            f"{duration:.1f}s" if duration is not None else "-",
            _when(next_fire) if row["next"] else next_fire,
            str(streak) if streak else "-",
        ])
    print_table(["JOB", "LAST STATUS", "LAST STARTED", "DURATION", "NEXT FIRE", "FAILURE STREAK"], table)
    return 0
