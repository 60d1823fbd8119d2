"""Global (non-job) config sections: ``daemon:``, ``state:`` and ``http:``.

The ``docker:`` section's model lives with the container kind (``scheduler.kinds.container.settings``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from scheduler.config.sizes import Size
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
    """Where run records live: a SQLite file (``path``, default ``<data dir>/.scheduler/state.db``)
    or a PostgreSQL database shared by several schedulers (``url``, or ``url_file`` for a file
    holding it).  The URL's password is a secret: see :meth:`secrets`."""

    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="The state store: a SQLite file, or a PostgreSQL database shared by several schedulers.")
    path: str | None = Field(
        default=None, description="SQLite file (default: <data dir>/.scheduler/state.db); sqlite only.")
    url: str | None = Field(
        default=None,
        description="postgresql://USER:PASSWORD@HOST:5432/DB (or url_file); postgres only. The password is masked.")
    lease_ttl: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a replica's claim on a running run holds without renewal; after it, another "
                    "replica records the run abandoned and runs the slot again (postgres).")
    max_output: Size = Field(
        default=1024 * 1024,
        description="Output kept per run (512k, 1m, ...): the head and the tail, with a marker line for what was cut.")
    keep_runs: int | None = Field(
        default=100, ge=1, description="Keep the output of this many newest runs per job (null: no count limit).")
    keep_days: float | None = Field(
        default=30, gt=0, description="Keep run output for this many days after the run ended (null: no age limit).")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        # never echo the value: it holds the password
        if value is not None and not re.match(r"postgres(ql)?://", value):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return value

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: timedelta) -> timedelta:
        # renewals run every third of it; below a second the database round trips would dominate
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _backend_keys(self) -> StateSettings:
        if self.backend == "postgres" and not self.url:
            raise ValueError("backend postgres needs 'url' (or 'url_file')")
        if self.backend == "postgres" and self.path is not None:
            raise ValueError("'path' is only for backend sqlite (postgres uses 'url')")
        if self.backend == "sqlite" and self.url is not None:
            raise ValueError("'url' is only for backend postgres")
        return self

    def secrets(self) -> set[str]:
        """Values to mask wherever text is shown: the URL's password, as written and decoded."""
        from scheduler.stores.urls import url_secrets

        return url_secrets(self.url)


class HttpSettings(Model):
    """The optional operations endpoint (health, metrics, job API)."""

    listen: str | None = Field(
        default=None, description="HOST:PORT of the operations endpoint (unset: off; port 0 picks a free one).")
    api_token: str | None = Field(
        default=None, description="Bearer token (a secret) that enables GET /jobs and POST /jobs/NAME/run.")
    stale_after: Duration = Field(
        default=timedelta(seconds=90), description="/healthz answers 503 when the loop has not stepped for this long.")
    base_path: str = Field(
        default="", pattern=r"^(/[A-Za-z0-9._~-]+)*/?$",
        description="URL path prefix the endpoint and the web console are reached under behind a reverse proxy "
        "(e.g. /scheduler): every link and form carries it; requests with or without it are served.")

    @field_validator("base_path")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.\-\[\]:]*:\d{1,5}", value):
            raise ValueError(f"must be HOST:PORT, got {value!r}")
        return value
