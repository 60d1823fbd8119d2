"""``scheduler backfill JOB --from D --to D [--parallel N] [--rerun failed|all]``.

One run per logical date in ``[from, to]`` (daily granularity), for the slot
``schedule.slot_for_date(date)``, through :meth:`Runner.execute` with trigger ``backfill`` - the
same code path as scheduled runs and ``run-job``, so records, retries and timeouts behave alike.

Which dates run:

* default: every date that has no successful run yet (``store.succeeded``);
* ``--rerun failed``: only dates whose backfill slot has a ``failed``, ``timeout``,
  ``interrupted`` or ``abandoned`` record and no success; dates never run are left alone;
* ``--rerun all``: every date.

Invariants: a backfill is resumable - after an interruption the same command skips the dates
that succeeded meanwhile; at most ``--parallel`` runs are in flight; a first SIGINT/SIGTERM stops
handing out dates and cancels running handles (each records ``interrupted``), a second kills
them; the exit code is 0 (all ran dates succeeded), 1 (any failed), 130/143 (interrupted).
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

from scheduler.errors import UsageError

if TYPE_CHECKING:
    from scheduler.runner import Runner
    from scheduler.runs import RunHandle
    from scheduler.schedule import Schedule
    from scheduler.stores.protocol import StateStore

RERUN_STATUSES = ("failed", "timeout", "interrupted", "abandoned")
MAX_DATES = 36_600  # a century of days; a guard against typos in --from/--to
SUMMARY_ROWS = 60


@dataclass
class DatePlan:
    """One logical date of a backfill: its slot, whether it runs, and what happened."""

    day: date
    slot: datetime
    run: bool
    note: str = ""
    status: str = "pending"
    run_id: int | None = None
    attempt: int | None = None
    duration: float | None = None
    error: str | None = None


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: expected YYYY-MM-DD, got {text!r}") from None


def plan_dates(store: StateStore, job: str, schedule: Schedule, first: date, last: date,
               rerun: str | None) -> list[DatePlan]:
    """The dates of ``[first, last]`` with the decision for each (see the module docstring)."""
    if last < first:
        raise UsageError(f"--to {last} is before --from {first}")
    count = (last - first).days + 1
    if count > MAX_DATES:
        raise UsageError(f"{count} dates requested; at most {MAX_DATES} per backfill")
    plans: list[DatePlan] = []
    for offset in range(count):
        day = first + timedelta(days=offset)
        slot = schedule.slot_for_date(day)
        if rerun == "all":
            plans.append(DatePlan(day, slot, True))
        elif store.succeeded(job, day):
            plans.append(DatePlan(day, slot, False, "already succeeded", status="skipped"))
        elif rerun == "failed":
            record = store.find_run(job, slot)
            if record is not None and record.status in RERUN_STATUSES:
                plans.append(DatePlan(day, slot, True))
            else:
                plans.append(DatePlan(day, slot, False, "no failed run", status="skipped"))
        else:
            plans.append(DatePlan(day, slot, True))
    return plans


class Progress:
    """A rich progress bar on a terminal, one plain line per finished date otherwise."""

    def __init__(self, job: str, total: int, tty: bool) -> None:
        self.job = job
        self.total = total
        self.done = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        if tty and total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("[bold]backfill {task.fields[job]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn())
            self._task = self._bar.add_task("backfill", total=total, job=job, failed=0)

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, plan: DatePlan) -> None:
        with self._lock:
            self.done += 1
            self.failed += plan.status != "success"
            if self._bar is not None:
                self._bar.update(self._task, advance=1, failed=self.failed)
            else:
                print(f"backfill {self.job} {plan.day}: {plan.status} ({self.done}/{self.total})"
                      + (f": {plan.error}" if plan.error and plan.status != "success" else ""), flush=True)


class Backfill:
    """Runs the planned dates on up to ``parallel`` threads; :meth:`wait` handles signals."""

    def __init__(self, runner: Runner, job: str, plans: list[DatePlan], parallel: int, progress: Progress) -> None:
        self.runner = runner
        self.job = job
        self.parallel = parallel
        self.progress = progress
        self.todo: queue.Queue[DatePlan] = queue.Queue()
        for plan in plans:
            if plan.run:
                self.todo.put(plan)
        self.active: set[RunHandle] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.signals: list[int] = []
        self.all_done = threading.Event()

    def _worker(self) -> None:
        from scheduler.runs import RunHandle, RunRequest

        while True:
            try:
                plan = self.todo.get_nowait()
            except queue.Empty:
                return
            handle = RunHandle(RunRequest(job=self.job, slot=plan.slot, trigger="backfill"))
            with self.lock:  # registered before running, so a stop either sees it or prevents it
                if self.stopping:
                    plan.status, plan.note = "not run", "backfill interrupted"
                    continue
                self.active.add(handle)
            try:
                result = self.runner.execute(handle.request, handle)
                plan.status, plan.run_id, plan.attempt = result.status, result.run_id, result.attempt
                plan.duration, plan.error = result.duration, result.error
            except Exception as exc:  # noqa: BLE001 - a crash fails this date, not the backfill
                plan.status, plan.error = "failed", f"scheduler error: {exc}"
            finally:
                with self.lock:
                    self.active.discard(handle)
            self.progress.advance(plan)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)  # flag only; wait() acts

    def run(self) -> None:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            threads = [threading.Thread(target=self._worker, name=f"backfill-{i}", daemon=True)
                       for i in range(min(self.parallel, self.todo.qsize()))]
            for thread in threads:
                thread.start()
            handled = 0
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(0.1)
                if len(self.signals) > handled:
                    handled = len(self.signals)
                    self._stop(escalate=handled > 1)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop(self, escalate: bool) -> None:
        name = signal.Signals(self.signals[0]).name
        with self.lock:
            self.stopping = True
            handles = list(self.active)
        for handle in handles:
            if escalate:
                handle.kill()
            else:
                handle.cancel(f"backfill interrupted by {name}")


def _summary(job: str, plans: list[DatePlan]) -> None:
    from scheduler.ops.tables import print_table

    succeeded = sum(p.status == "success" for p in plans)
    skipped = sum(p.status == "skipped" for p in plans)
    not_run = sum(p.status in ("not run", "pending") for p in plans)
    interrupted = sum(p.status == "interrupted" for p in plans)
    failed = len(plans) - succeeded - skipped - not_run - interrupted
    shown = plans if len(plans) <= SUMMARY_ROWS else [p for p in plans if p.status not in ("success", "skipped")]
    print_table(["DATE", "STATUS", "RUN", "ATTEMPTS", "DURATION", "NOTE"],
                [[p.day.isoformat(), p.status, str(p.run_id or "-"), str(p.attempt or "-"),
                  f"{p.duration:.1f}s" if p.duration is not None else "-", (p.error or p.note)[:100]]
                 for p in shown],
                title=f"backfill {job}: {plans[0].day} .. {plans[-1].day}" if plans else None)
    print(f"{len(plans)} dates: {succeeded} succeeded, {failed} failed, {skipped} skipped"
          + (f", {interrupted} interrupted" if interrupted else "")
          + (f", {not_run} not run" if not_run else ""), flush=True)


def cmd_backfill(args: argparse.Namespace) -> int:
    from scheduler.app.commands import check_job
    from scheduler.app.context import App, Options

    with App.load(Options.from_args(args)) as app:
        check_job(app.config, args.job)
        if args.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        first, last = parse_day(args.start, "--from"), parse_day(args.end, "--to")
        app.prepare_data_dir()
        plans = plan_dates(app.store, args.job, app.config.schedules[args.job], first, last, args.rerun)
        runner = app.runner()
        runner.sweep_result_files()
        todo = [p for p in plans if p.run]
        tty = sys.stdout.isatty()
        progress = Progress(args.job, len(todo), tty)
        with progress:
            if tty:  # log through rich's stdout proxy so lines print above the bar
                app.configure_logging()
            backfill = Backfill(runner, args.job, plans, args.parallel, progress)
            backfill.run()
        if tty:
            app.configure_logging()
    for plan in todo:
        if plan.status == "pending":
            plan.status, plan.note = "not run", "backfill interrupted"
    _summary(args.job, plans)
    if backfill.signals:
        return 128 + backfill.signals[0]
    return 1 if any(p.status not in ("success", "skipped") for p in plans) else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job name")
    p.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first logical date")
    p.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD", help="last logical date (inclusive)")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at once (default 1)")
    p.add_argument("--rerun", choices=["failed", "all"], default=None,
                   help="failed: only dates with a failed record; all: every date (default: dates not yet successful)")
