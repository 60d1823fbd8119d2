"""Global (non-job) config sections: ``daemon:``, ``state:`` and ``http:``.

The ``docker:`` section's model lives with the container kind (``scheduler.kinds.container.spec``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from scheduler.config.types import Duration, Model


class DaemonSettings(Model):
    """How the PID-1 daemon behaves."""

    shutdown_grace: Duration = Field(
        default=timedelta(seconds=8),
        description="On SIGTERM/SIGINT: time running jobs get after SIGTERM before SIGKILL.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level (--log-level overrides it).")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON lines when stdout is not a terminal (--log-format overrides it).")
    max_parallel_runs: int = Field(default=64, description="Runs beyond this wait in a queue.")


class StateSettings(Model):
    """Where run records live.  ``path`` defaults to ``<data dir>/.scheduler/state.db``."""

    backend: Literal["sqlite"] = Field(default="sqlite", description="The state store.")
    path: str | None = Field(default=None, description="SQLite file (default: <data dir>/.scheduler/state.db).")


class HttpSettings(Model):
    """The optional operations endpoint (health, metrics, job API)."""

    listen: str | None = Field(
        default=None, description="HOST:PORT of the operations endpoint (unset: off; port 0 picks a free one).")
    api_token: str | None = Field(
        default=None, description="Bearer token (a secret) that enables GET /jobs and POST /jobs/NAME/run.")
    stale_after: Duration = Field(
        default=timedelta(seconds=90), description="/healthz answers 503 when the loop has not stepped for this long.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.\-\[\]:]*:\d{1,5}", value):
            raise ValueError(f"must be HOST:PORT, got {value!r}")
        return value
