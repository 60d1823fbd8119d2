"""The nouns of one run: what is asked (:class:`RunRequest`), the live run (:class:`RunHandle`),
how it ended (:class:`RunResult`) and the pure rule deciding that (:func:`decide`).

Plain data, plus the handle whose only machinery is a signal to the run's process group: the
planner, the daemon's extensions and the operations features use these without importing the
runner (which owns the child processes).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from scheduler import clock
from scheduler.process import signal_group
from scheduler.schedule import Schedule


@dataclass(frozen=True)
class RunRequest:
    """A request to run ``job`` for ``slot`` (its logical date follows from the job's schedule)."""

    job: str
    slot: datetime
    trigger: str = "schedule"
    params: Mapping[str, Any] = field(default_factory=dict)
    interval: tuple[datetime, datetime] | None = None  # inherited from an upstream run (``after:``)

    def data_interval(self, schedule: Schedule) -> tuple[datetime, datetime, date]:
        """``(start, end, logical_date)``: the inherited interval, else the slot's on ``schedule``."""
        start, end = self.interval or schedule.interval_of(self.slot)
        return start, end, start.astimezone(schedule.tz).date()


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run (its last attempt), as recorded."""

    status: str
    run_id: int
    attempt: int
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    error: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


def decide(returncode: int | None, timed_out: bool, cancel_reason: str | None,
           worker_error: str | None) -> tuple[str, str | None]:
    """Pure outcome rule: ``(status, error)`` from how an attempt ended.

    An attempt that exited 0 succeeded, even if a timeout or a stop was requested meanwhile (it
    finished first, or it had published and ignored the signal)."""
    if returncode == 0:
        return "success", None
    if cancel_reason is not None:
        return "interrupted", cancel_reason
    if timed_out:
        return "timeout", "timed out"
    if worker_error:
        return "failed", worker_error
    if returncode is not None and returncode < 0:
        return "failed", f"killed by signal {signal.Signals(-returncode).name}"
    return "failed", f"exited with code {returncode}"


class RunHandle:
    """A live run: lets the daemon cancel it (shutdown, ``replace``) or kill it outright."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.run_id: int | None = None
        self.started = clock.now()
        self.wake = threading.Event()
        self.cancel_reason: str | None = None
        self.cancel_grace: float | None = None
        self.force = False
        self.pgid: int | None = None
        self.finished = threading.Event()
        self.result: RunResult | None = None

    def cancel(self, reason: str, grace: float | None = None) -> None:
        """Stop the run: SIGTERM its process group, SIGKILL after ``grace`` (default: kill_grace)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_grace = grace
        self.wake.set()

    def kill(self) -> None:
        """Escalate at once: SIGKILL the process group now."""
        self.force = True
        if self.cancel_reason is None:
            self.cancel_reason = "killed"
        if self.pgid is not None:
            signal_group(self.pgid, signal.SIGKILL)
        self.wake.set()
