"""The operator console's records as every state store reads them back: run output lines, job
controls (pause) and run requests (``scheduler trigger``).

Plain frozen data with aware UTC timestamps; the backends build them from their rows.  Also the
columns of a finished run as every backend writes them (:func:`finish_columns`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from scheduler.status import FINAL_STATUSES, RunStatus

SCHEDULER_STREAM = "scheduler"
"""The stream of lines the scheduler itself adds to a run's output (attempt and cut markers)."""


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def finish_columns(status: RunStatus, metrics: dict[str, Any] | None) -> tuple[str, str | None, Any]:
    """``(status, metrics, rows)`` of a finished run's row: the status value (a final one, else
    :class:`ValueError`), the metrics as JSON (``None`` when there are none) and the row count
    the job reported (``rows_written``, else ``rows``, else ``None``)."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"not a final status: {status}")
    metrics = metrics or {}
    rows = metrics.get("rows_written", metrics.get("rows"))
    return RunStatus(status).value, json.dumps(metrics, default=str) if metrics else None, rows


@dataclass(frozen=True)
class OutputLine:
    """One stored line of a run's output.  ``seq`` orders the lines of a run (gaps mark cut lines)."""

    seq: int
    stream: str
    line: str
    ts: datetime

    def as_json(self, run_id: int) -> dict[str, Any]:
        return {"run_id": run_id, "seq": self.seq, "stream": self.stream, "line": self.line, "ts": _iso(self.ts)}


@dataclass(frozen=True)
class JobControl:
    """A job's runtime control row: whether it is paused, why, by whom and since when.

    ``run_id`` is the run whose failure paused the job (``pause_after_failures``), else None.
    """

    job: str
    paused: bool
    reason: str | None
    changed_at: datetime
    changed_by: str
    run_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job, "paused": self.paused, "reason": self.reason, "changed_at": _iso(self.changed_at),
                "changed_by": self.changed_by, "run_id": self.run_id}


@dataclass(frozen=True)
class TriggerRequest:
    """A queued request to run a job now (``scheduler trigger``), claimed by exactly one daemon.

    ``logical_date`` None means the job's latest slot; ``slot`` is filled in by the claimer.
    """

    id: int
    job: str
    logical_date: date | None
    trigger: str
    requested_at: datetime
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    slot: datetime | None = None
