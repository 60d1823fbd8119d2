"""Job spec models shared by every kind, plus the ``command`` and ``python`` kinds.

A spec says *what* runs and *when*; it is immutable after loading.  Kind-specific models for
``ingest`` and ``container`` live beside their implementations (``scheduler/kinds/``) and derive
from :class:`JobBase`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from scheduler.config.compiled import command_argv
from scheduler.config.types import Duration, FunctionRef, Model, TimezoneName, format_duration

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


class Notifier(Model):
    """A webhook to call on a run outcome (used by the operations features)."""

    url: str
    format: Literal["json", "slack"] = "json"
    timeout: Duration = timedelta(seconds=10)
    retries: int = Field(default=3, ge=0, le=10)


class JobBase(Model):
    """Fields every job kind has: schedule, execution policy, environment."""

    kind: str
    description: str = ""
    enabled: bool = True

    # when
    schedule: str | None = None
    every: Duration | None = None
    timezone: TimezoneName = "UTC"
    jitter: Duration = timedelta(0)
    after: tuple[str, ...] = ()
    catchup: Literal["none", "latest", "all"] = "latest"
    max_catchup: int = Field(default=10, ge=1, le=10_000)

    # how
    timeout: Duration | None = None
    kill_grace: Duration = timedelta(seconds=5)
    retries: int = Field(default=0, ge=0, le=100)
    retry_delay: Duration = timedelta(seconds=10)
    retry_max_delay: Duration = timedelta(minutes=10)
    concurrency: Literal["allow", "forbid", "replace"] = "forbid"

    # environment
    env: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    # operations
    on_failure: tuple[Notifier, ...] = ()
    on_recovery: tuple[Notifier, ...] = ()
    on_success: tuple[Notifier, ...] = ()
    expect_success_within: Duration | None = None

    @field_validator("after", mode="before", json_schema_input_type=Union[str, list[str]])
    @classmethod
    def _after_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("env", mode="before", json_schema_input_type=dict[str, Union[str, int, float, bool]])
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

    @model_validator(mode="after")
    def _one_schedule(self) -> "JobBase":
        if self.schedule is not None and self.every is not None:
            raise ValueError("use either 'schedule' or 'every', not both")
        return self


class CommandJob(JobBase):
    """Run an argv list (``command``) or a ``/bin/sh -c`` string (``shell``)."""

    kind: Literal["command"]
    command: tuple[str, ...] | None = None
    shell: str | None = None
    cwd: str | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _argv_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("must be a list of arguments; use 'shell' for a command line")
        if isinstance(value, list):
            if not value:
                raise ValueError("must not be empty")
            return argv_strings(value)
        return value

    @model_validator(mode="after")
    def _command_or_shell(self) -> "CommandJob":
        if (self.command is None) == (self.shell is None):
            raise ValueError("set exactly one of 'command' (argv list) or 'shell' (string)")
        return self

    def argv(self) -> list[str]:
        """The argv the child process executes."""
        return command_argv(self)


class PythonJob(JobBase):
    """Call ``module:function`` (importable from the project root, e.g. ``jobs.report:build``)."""

    kind: Literal["python"]
    function: FunctionRef
    cwd: str | None = None
