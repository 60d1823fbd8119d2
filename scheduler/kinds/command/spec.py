"""The ``command`` job model: an argv list (``command``) or a ``/bin/sh -c`` line (``shell``).

Validation only (pydantic); the runner builds the argv with :func:`scheduler.kinds.command.command_argv`,
which needs none of this.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scheduler.config.jobs import JobBase, argv_strings
from scheduler.kinds.command import command_argv


class CommandJob(JobBase):
    """Run an argv list (``command``) or a ``/bin/sh -c`` string (``shell``)."""

    kind: Literal["command"] = Field(description="command: run an argv list or a shell command line.")
    command: tuple[str, ...] | None = Field(
        default=None, description="Argv to execute, no shell (exactly one of command / shell).")
    shell: str | None = Field(
        default=None, description="A command line for /bin/sh -c (exactly one of command / shell).")
    cwd: str | None = Field(default=None, description="Working directory (default: the daemon's).")

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
    def _command_or_shell(self) -> CommandJob:
        if (self.command is None) == (self.shell is None):
            raise ValueError("set exactly one of 'command' (argv list) or 'shell' (string)")
        return self

    def argv(self) -> list[str]:
        """The argv the child process executes."""
        return command_argv(self)
