"""What a job kind receives and returns.

In-process kinds (``python``, ``ingest``, ``container``) are executed inside a worker child
process (``scheduler.worker``) as ``execute(spec, ctx) -> dict``.  The returned dict holds run
metrics (``rows_fetched``, ``rows_written``, ``rows_rejected``, ``pages``, ``bytes``) and
optionally ``watermark``; the runner stores the watermark only when the run succeeded.  Raising
any exception fails the run with the exception text as the recorded reason (secrets redacted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RunContext:
    """Everything a run may know about itself.  Immutable; built by the worker from the runner.

    Invariants: ``data_interval_start <= data_interval_end`` (both aware UTC);
    ``logical_date`` is ``data_interval_start`` as a date in the job's timezone.
    """

    job: str
    run_id: int
    attempt: int
    slot: datetime
    logical_date: date
    data_interval_start: datetime
    data_interval_end: datetime
    data_dir: Path
    params: Mapping[str, Any] = field(default_factory=dict)
    watermark: str | None = None
    log: Any = None  # a structlog BoundLogger bound to job, run_id, attempt
    docker: Any = None  # the global ``docker:`` settings (DockerSettings) for container jobs

    def template_vars(self) -> dict[str, str]:
        """Values for ``{placeholder}`` templating in kind configs."""
        return {
            "logical_date": self.logical_date.isoformat(),
            "data_interval_start": self.data_interval_start.isoformat(),
            "data_interval_end": self.data_interval_end.isoformat(),
            "watermark": self.watermark or "",
            "job": self.job,
            "run_id": str(self.run_id),
        }


class Executor(Protocol):
    """Signature of an in-process kind's entry point."""

    def __call__(self, spec: Any, ctx: RunContext) -> dict[str, Any]: ...
