"""The job keys every kind shares (:class:`JobBase`), and helpers for the kinds' own models.

A spec says *what* runs and *when*; it is immutable after loading.  Each kind's model lives in
its own module under ``scheduler/kinds/`` and derives from :class:`JobBase`; the loader finds
them through the kind registry, so nothing here imports a kind.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scheduler.config.notifiers import Notifier, Ping, ping_input
from scheduler.config.types import Duration, Model, TimezoneName, format_duration

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_EVERY = timedelta(seconds=1)  # the daemon loop is not a sub-second timer


def argv_strings(items: list[Any]) -> list[str]:
    """An argv list from YAML: strings and numbers as text; ``true``/``null`` must be quoted."""
    out = []
    for item in items:
        if isinstance(item, bool) or item is None or isinstance(item, (dict, list)):
            raise ValueError(f"argument {item!r} is not a string: quote it (YAML reads true, no, null, ... as values)")
        out.append(str(item))
    return out


class JobBase(Model):
    """Fields every job kind has: schedule, execution policy, environment."""

    kind: str = Field(description="What a run does: command, python, ingest or container.")
    description: str = Field(default="", description="Free text; shown nowhere but the config.")
    enabled: bool = Field(default=True, description="false: never fired by the daemon (run-job still runs it).")

    # when
    schedule: str | None = Field(
        default=None,
        description="Cron: 5 fields (min hour dom month dow), 6 (seconds first), or @hourly @daily @weekly @monthly "
                    "@yearly; read on the wall clock of 'timezone'.")
    every: Duration | None = Field(
        default=None,
        description="Interval schedule instead of 'schedule' (at least 1s); slots are anchored at the Unix epoch.")
    timezone: TimezoneName = Field(
        default="UTC", description="IANA name of the wall clock the cron schedule is read in.")
    jitter: Duration = Field(
        default=timedelta(0),
        description="Fire each slot up to this much later (a stable pseudo-random amount per job and slot).")
    after: tuple[str, ...] = Field(
        default=(), description="Job name or list: run when these jobs have succeeded for the same logical date.")
    catchup: Literal["none", "latest", "all"] = Field(
        default="latest",
        description="Slots missed while the scheduler was down: run none, the newest one, or all (up to max_catchup).")
    max_catchup: int = Field(default=10, ge=1, le=10_000, description="Most missed slots run by catchup: all.")

    # how
    timeout: Duration | None = Field(
        default=None, description="Per attempt: SIGTERM the run's process group, then SIGKILL after kill_grace.")
    kill_grace: Duration = Field(default=timedelta(seconds=5), description="Time between SIGTERM and SIGKILL.")
    retries: int = Field(default=0, ge=0, le=100, description="Extra attempts after a failure or timeout.")
    retry_delay: Duration = Field(
        default=timedelta(seconds=10), description="First backoff; doubles each attempt, with jitter.")
    retry_max_delay: Duration = Field(default=timedelta(minutes=10), description="Cap of the backoff.")
    concurrency: Literal["allow", "forbid", "replace", "queue"] = Field(
        default="forbid",
        description="When a slot fires while a run is active: run both (allow), record the new slot skipped (forbid),"
                    " stop the running one (replace), or run it right after (queue: at most one waits, a further"
                    " slot is skipped).")
    run_on_start: bool = Field(
        default=False, description="Fire once (the latest slot) when the daemon starts; not on a config reload.")
    pause_after_failures: int | None = Field(
        default=None, ge=1,
        description="Pause the job after this many failed runs in a row (the on_failure alert says so), until"
                    " 'scheduler resume'.")

    # environment
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables for the run (names like NAME_1; values strings or numbers).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Run parameters (run-job --param k=v overrides them).")

    # operations
    on_failure: tuple[Notifier, ...] = Field(
        default=(), description="Webhooks called on every failed or timed-out run and on freshness breaches.")
    on_recovery: tuple[Notifier, ...] = Field(
        default=(), description="Webhooks called on the first success after failures.")
    on_success: tuple[Notifier, ...] = Field(default=(), description="Webhooks called on every success.")
    expect_success_within: Duration | None = Field(
        default=None, description="Alert when the job has not succeeded for this long.")
    ping: Ping | None = Field(
        default=None, description="healthchecks.io-style check pinged at each run's start (URL/start), success "
                                  "(URL) and failure (URL/fail); a URL or {url, timeout, retries, send_log}.")

    @field_validator("after", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _after_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("env", mode="before", json_schema_input_type=dict[str, str | int | float | bool])
    @classmethod
    def _env_strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key, val in value.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if isinstance(val, (dict, list)) or val is None:
                raise ValueError(f"value of {key} must be a string or number")
            out[key] = str(val).lower() if isinstance(val, bool) else str(val)
        return out

    @field_validator("every")
    @classmethod
    def _every_floor(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < MIN_EVERY:
            raise ValueError(f"must be at least {format_duration(MIN_EVERY)}")
        return value

    @field_validator("ping", mode="before", json_schema_input_type=str | Ping | None)
    @classmethod
    def _ping_url(cls, value: Any) -> Any:
        return ping_input(value)

    @model_validator(mode="after")
    def _one_schedule(self) -> JobBase:
        if self.schedule is not None and self.every is not None:
            raise ValueError("use either 'schedule' or 'every', not both")
        return self
