"""Global (non-job) config sections: ``daemon:``, ``state:`` and ``http:``.

The ``docker:`` section's model lives with the container kind (``scheduler.kinds.container.spec``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import field_validator

from scheduler.config.types import Duration, Model


class DaemonSettings(Model):
    """How the PID-1 daemon behaves."""

    shutdown_grace: Duration = timedelta(seconds=8)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    max_parallel_runs: int = 64


class StateSettings(Model):
    """Where run records live.  ``path`` defaults to ``<data dir>/.scheduler/state.db``."""

    backend: Literal["sqlite"] = "sqlite"
    path: str | None = None


class HttpSettings(Model):
    """The optional operations endpoint (health, metrics, job API)."""

    listen: str | None = None
    api_token: str | None = None
    stale_after: Duration = timedelta(seconds=90)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.\-\[\]:]*:\d{1,5}", value):
            raise ValueError(f"must be HOST:PORT, got {value!r}")
        return value
