"""The operator console's subcommands: ``logs``, ``pause``, ``resume`` and ``trigger``.

All four work through the state store only, so they reach a daemon on this host or on any other
host sharing the store (PostgreSQL): ``logs`` reads the ``run_output`` table the runner writes,
``pause``/``resume`` change the ``job_control`` table and ``trigger`` queues a ``run_requests``
row that exactly one running daemon claims.  Each ``cmd_*`` returns the exit code.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.app.commands import EXIT_FOR_STATUS, check_job, parse_date
from scheduler.app.context import App, Options
from scheduler.errors import JobFailed, UsageError

if TYPE_CHECKING:
    from scheduler.state import RunRecord
    from scheduler.stores.protocol import StateStore

FOLLOW_EVERY = 0.25  # seconds between reads while following a run
PAGE = 5000
TRIGGER_WAIT = 15.0


def add_subcommands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``logs``, ``pause``, ``resume`` and ``trigger`` on the main parser."""
    p = add("logs", "print a run's stored output (RUN_ID, or JOB for its latest run)")
    p.add_argument("target", metavar="RUN_ID|JOB")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("pause", "stop the running scheduler(s) from firing JOB until 'resume'")
    p.add_argument("job")
    p.add_argument("--reason", default=None, metavar="TEXT")
    p = add("resume", "fire JOB again; slots missed while paused follow its catchup")
    p.add_argument("job")
    p = add("trigger", "run JOB now through the running scheduler (its latest slot, or --date's)")
    p.add_argument("job")
    p.add_argument("--date", help="logical date YYYY-MM-DD (default: the most recent slot)")
    p.add_argument("--wait", type=float, default=TRIGGER_WAIT, metavar="SECONDS",
                   help=f"how long a scheduler has to claim the request (default {TRIGGER_WAIT:g})")
    p.add_argument("--no-wait", action="store_true", help="leave the request queued and return at once")


def operator() -> str:
    """Who changed a control: ``cli USER@HOST`` (recorded, shown by ``status --json``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        import os

        user = str(os.getuid())
    return f"cli {user}@{socket.gethostname()}"


# --- logs ---------------------------------------------------------------------------------------
def _resolve_run(app: App, target: str) -> RunRecord:
    if target.isdigit():
        record = app.store.get_run(int(target))
        if record is None:
            raise UsageError(f"no run with id {target}")
        return record
    check_job(app.config, target)
    record = app.store.last_runs().get(target)
    if record is None:
        raise JobFailed(f"job '{target}' has no runs yet")
    return record


def _print_lines(store: StateStore, run_id: int, after: int, as_json: bool) -> int:
    """Print the run's lines after ``after``; return the last seq printed."""
    while True:
        lines = store.read_output(run_id, after, PAGE)
        for line in lines:
            print(json.dumps(line.as_json(run_id)) if as_json else line.line)
        if lines:
            after = lines[-1].seq
            sys.stdout.flush()
        if len(lines) < PAGE:
            return after


def cmd_logs(args: argparse.Namespace) -> int:
    with App.inspect(Options.from_args(args)) as app:
        record = _resolve_run(app, args.target)
        last = _print_lines(app.store, record.id, 0, args.json)
        if not args.follow:
            if last == 0:
                print(f"run {record.id} has no stored output (it printed nothing, or it was pruned: "
                      "state.keep_runs, state.keep_days)", file=sys.stderr)
            return 0
        while record.status == "running":
            time.sleep(FOLLOW_EVERY)
            current = app.store.get_run(record.id)
            last = _print_lines(app.store, record.id, last, args.json)
            if current is None:
                break
            record = current
        _print_lines(app.store, record.id, last, args.json)  # the runner stores all output before it finishes
        return EXIT_FOR_STATUS.get(record.status, 1)


# --- pause and resume ---------------------------------------------------------------------------
def cmd_pause(args: argparse.Namespace) -> int:
    with App.inspect(Options.from_args(args)) as app:
        check_job(app.config, args.job)
        if app.store.set_paused(args.job, True, args.reason, operator()):
            print(f"paused {args.job}" + (f" ({args.reason})" if args.reason else ""))
        else:
            control = app.store.job_controls()[args.job]
            print(f"{args.job} was already paused since {control.changed_at:%Y-%m-%d %H:%M:%S %Z} by "
                  f"{control.changed_by}" + (f" ({control.reason})" if control.reason else ""))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with App.inspect(Options.from_args(args)) as app:
        check_job(app.config, args.job)
        if app.store.set_paused(args.job, False, None, operator()):
            catchup = app.config.jobs[args.job].catchup
            print(f"resumed {args.job}; slots missed while it was paused follow catchup: {catchup}")
        else:
            print(f"{args.job} is not paused")
    return 0


# --- trigger ------------------------------------------------------------------------------------
def cmd_trigger(args: argparse.Namespace) -> int:
    with App.inspect(Options.from_args(args)) as app:
        check_job(app.config, args.job)
        day = parse_date(args.date) if args.date else None
        request_id = app.store.request_trigger(args.job, day, "request")
        what = f"run of {args.job}" + (f" for logical date {day.isoformat()}" if day else "")
        if args.no_wait:
            print(f"{what} requested (request {request_id}); a running scheduler will claim it")
            return 0
        deadline = time.monotonic() + max(0.0, args.wait)
        while True:
            request = app.store.get_trigger(request_id)
            if request is None:
                raise JobFailed(f"request {request_id} disappeared from the state store")
            if request.claimed_by is not None:
                slot = request.slot.isoformat() if request.slot else "?"
                print(f"{what} claimed by {request.claimed_by} (request {request_id}, slot {slot}); "
                      f"follow it with: scheduler logs {args.job} --follow")
                return 0
            if time.monotonic() >= deadline and app.store.cancel_trigger(request_id):
                raise JobFailed(f"no running scheduler claimed the request within {args.wait:g}s (is 'scheduler run' "
                                "running on this state store?); it was withdrawn")
            time.sleep(0.1)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "logs": cmd_logs, "pause": cmd_pause, "resume": cmd_resume, "trigger": cmd_trigger,
}
