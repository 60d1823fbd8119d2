"""The core subcommands: ``run``, ``run-job``, ``list``, ``validate``, ``history``, ``schema``, ``health``.

Each ``cmd_*`` takes the parsed arguments and returns the exit code; errors the user can fix
raise a ``SchedulerError`` that the command line prints as one line per problem.  The context
(config, store, logging, runners) comes from :mod:`scheduler.app.context`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.app.context import App, Options, load_config, open_state, paused_jobs
from scheduler.config.compiled import Config
from scheduler.errors import ConfigError, Interrupted, JobFailed, UsageError
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.runner import Runner
    from scheduler.runs import RunHandle, RunRequest

FORCE_POLL = 1.0  # seconds between claims of a held slot (run-job --force)
EXIT_FOR_STATUS: Mapping[RunStatus, int] = {RunStatus.SUCCESS: 0, RunStatus.FAILED: 1, RunStatus.TIMEOUT: 1,
                                            RunStatus.SKIPPED: 0, RunStatus.ABANDONED: 1}


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--date: expected YYYY-MM-DD, got {text!r}") from None


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    if not items:
        return {}  # without parameters, spare the YAML import (run-job start-up time)
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key] = value
    return params


def check_job(config: Config, job: str) -> None:
    if job not in config.jobs:
        raise UsageError(f"unknown job '{job}' (known: {', '.join(config.jobs) or 'none'})")


def slot_for(config: Config, job: str, day: date | None) -> datetime:
    """The slot a foreground run of ``job`` stands for: ``day``'s, or the most recent one."""
    schedule = config.schedules[job]
    return schedule.slot_for_date(day) if day is not None else schedule.latest_slot(clock.now())


# --- reading commands ------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(Options.from_args(args).config_path)
    print(f"config OK: {len(config.jobs)} job(s) from {', '.join(config.sources)}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from scheduler.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from scheduler.planner import next_fire_times

    options = Options.from_args(args)
    config = load_config(options.config_path)
    paused = paused_jobs(config, options.data_root)
    now = clock.now()
    rows: list[dict[str, Any]] = []
    for name, spec in config.jobs.items():
        schedule = config.schedules[name]
        upcoming = next_fire_times(config, name, now, 3) if spec.enabled else []
        rows.append({
            "job": name, "kind": spec.kind, "schedule": schedule.describe(), "timezone": spec.timezone,
            "after": list(spec.after), "enabled": spec.enabled, "paused": name in paused,
            "next": [t.astimezone(schedule.tz).isoformat() for t in upcoming],
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from scheduler.ops.tables import print_table

    print_table(["JOB", "KIND", "SCHEDULE", "TIMEZONE", "NEXT FIRE TIMES"],
                [[r["job"] + ("" if r["enabled"] else " (disabled)") + (" (paused)" if r["paused"] else ""), r["kind"],
                  " ".join(filter(None, [r["schedule"] if r["schedule"] != "-" else "",
                                         f"after {', '.join(r['after'])}" if r["after"] else ""])) or "-",
                  r["timezone"],
                  "\n".join(r["next"]) or "-"] for r in rows])
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with App.inspect(Options.from_args(args)) as app:
        if args.job and args.job not in app.config.jobs:
            raise UsageError(f"unknown job '{args.job}'")
        records = app.store.history(args.job, args.limit)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    from scheduler.ops.tables import print_table

    print_table(["ID", "JOB", "LOGICAL DATE", "TRIGGER", "ATTEMPT", "STATUS", "STARTED", "DURATION", "ROWS", "ERROR"],
                [[str(r.id), r.job, r.logical_date.isoformat(), r.trigger, str(r.attempt), r.status,
                  r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-",
                  f"{r.duration:.1f}s" if r.duration is not None else "-",
                  str(r.rows) if r.rows is not None else "-", (r.error or "")[:80]] for r in records])
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when a daemon's loop ticked recently and the state store answers (for HEALTHCHECK)."""
    import time

    from scheduler.daemon import heartbeat_path
    from scheduler.daemon_view import IDLE_TICK

    options = Options.from_args(args)
    root = options.data_root
    limit = args.max_age if args.max_age is not None else IDLE_TICK.total_seconds() * 2 + 5
    try:
        age = time.time() - heartbeat_path(root).stat().st_mtime
    except FileNotFoundError:
        print("unhealthy: no heartbeat (is the scheduler running with this --data-dir?)")
        return 1
    if age > limit:
        print(f"unhealthy: scheduler loop last ticked {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    try:
        config: Config | None = load_config(options.config_path)
    except ConfigError:
        config = None  # a bad new config file must not make a running daemon unhealthy
    store = open_state(config, root)
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - any store failure makes the check fail
        print(f"unhealthy: state store does not answer: {exc}")
        return 1
    finally:
        store.close()
    print(f"healthy: loop ticked {age:.0f}s ago")
    return 0


# --- commands that run jobs ------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.ops import attach

    with App.load(Options.from_args(args), cached=False) as app:
        app.prepare_data_dir()
        daemon = app.daemon()
        attach(daemon)
        return daemon.serve()


def cmd_run_job(args: argparse.Namespace) -> int:
    with App.load(Options.from_args(args)) as app:
        check_job(app.config, args.job)
        day = parse_date(args.date) if args.date else None
        return run_job(app, args.job, day, parse_params(args.param), force=getattr(args, "force", False))


def refusal(app: App, job: str, slot: datetime) -> str:
    """Why a foreground run of ``(job, slot)`` is refused: the run holding the slot, in words."""
    record = app.store.find_run(job, slot)
    running = (f"run {record.id} of {job} for slot {slot.isoformat()} is running (started "
               f"{record.started_at.isoformat() if record.started_at else 'at an unknown time'})"
               if record is not None and record.status == RunStatus.RUNNING
               else f"a run of {job} for slot {slot.isoformat()} is running")
    return (f"refused: {running}, by a scheduler or another run-job; "
            "--force runs the slot again once that run has ended")


def run_job(app: App, job: str, day: date | None, params: Mapping[str, Any], force: bool = False) -> int:
    """Run ``job`` once in the foreground for ``day``'s slot (default: the most recent one).

    The run claims the slot like any scheduler replica: while a run of the same slot is in
    progress (on any host sharing the store) it is refused (``JobFailed``, exit 1), or with
    ``force`` it waits for that run to end and then runs the slot again - never two at once.
    Returns the exit code of the run's outcome; raises ``Interrupted`` when a SIGTERM/SIGINT
    stopped it (a second signal kills the run's process group at once) and ``JobFailed`` when it
    ended without a result.
    """
    from scheduler.replica import keep_leases, shared
    from scheduler.runs import RunHandle, RunRequest

    check_job(app.config, job)
    request = RunRequest(job=job, slot=slot_for(app.config, job, day), trigger="manual", params=dict(params))
    app.prepare_data_dir()
    runner = app.runner()
    runner.sweep_result_files()
    handle = RunHandle(request)
    received: list[int] = []
    with keep_leases(app.store, shared(app.config)):
        if force:
            handle.run_id = _claim_when_free(app, request, received)
        return _run_in_foreground(app, runner, request, handle, received)


def _claim_when_free(app: App, request: RunRequest, received: list[int]) -> int:
    """``--force``: claim the slot as soon as the run holding it ended (or its lease ran out)."""
    logical_date = request.data_interval(app.config.schedules[request.job])[2]
    waiting = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        waiting.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    announced = False
    try:
        while True:
            run_id = app.store.start_run(request.job, request.slot, logical_date, request.trigger)
            if run_id is not None:
                return run_id
            if received:
                raise Interrupted(received[0])
            if not announced:
                announced = True
                print(f"{refusal(app, request.job, request.slot).removeprefix('refused: ')}: "
                      "waiting for it to end (--force)", file=sys.stderr, flush=True)
            waiting.wait(FORCE_POLL)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_in_foreground(app: App, runner: Runner, request: RunRequest, handle: RunHandle, received: list[int]) -> int:
    job = request.job

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            handle.cancel(f"interrupted by {signal.Signals(signum).name}")
        else:
            handle.kill()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = threading.Thread(target=runner.execute, args=(request, handle), daemon=True)
        thread.start()
        while not handle.finished.wait(0.5) and thread.is_alive():
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    result = handle.result
    if result is not None and result.status == RunStatus.SKIPPED and result.run_id == 0:
        raise JobFailed(refusal(app, job, request.slot))
    if result is None or result.status == RunStatus.SKIPPED:
        raise JobFailed(result.error if result is not None else "the run ended without a result")
    if result.status == RunStatus.INTERRUPTED:
        raise Interrupted(received[0] if received else signal.SIGTERM)
    return EXIT_FOR_STATUS.get(result.status, 1)
