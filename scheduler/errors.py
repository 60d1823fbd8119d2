"""One error hierarchy; each subclass carries the process exit code the CLI maps it to.

Exit codes (a contract, see README): 0 success, 1 job failed, 2 bad config or usage,
130/143 interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass


class SchedulerError(Exception):
    """Base of every error the scheduler raises on purpose; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration, located as precisely as the loader could.

    ``str()`` gives the one-line form users see: ``FILE:LINE: job 'NAME': FIELD: message``.
    Parts that are unknown are left out rather than invented.
    """

    message: str
    file: str | None = None
    line: int | None = None
    job: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.job:
            parts.append(f"job '{self.job}'")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(SchedulerError):
    """Invalid configuration: all problems found, reported together, exit 2."""

    exit_code = 2

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue(issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UsageError(SchedulerError):
    """Bad command-line usage (unknown job, malformed --date or --param), exit 2."""

    exit_code = 2


class StateError(SchedulerError):
    """The state store cannot be opened or used (permissions, a corrupt file, a full disk)."""

    exit_code = 1


class StoreNotWritable(StateError):
    """The process may not write where the state lives (a volume owned by another uid): a setup
    error, exit 2.  ``hint`` says how to fix it and is part of the one-line message."""

    exit_code = 2

    def __init__(self, message: str, hint: str) -> None:
        self.hint = hint
        super().__init__(f"{message}; {hint}")


class JobFailed(SchedulerError):
    """A run ended in failure; the message is the recorded reason, one line, shown without a
    traceback.  Every kind's expected failures derive from it (a source that is down, a check
    that failed, a container that exited 3).

    ``work_exit_code`` is the exit status of the work itself when it has one of its own (a
    container's): the run records it instead of the worker's.
    """

    exit_code = 1
    work_exit_code: int | None = None


class Interrupted(SchedulerError):
    """A foreground run was stopped by a signal; exit code 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by signal {signum}")
