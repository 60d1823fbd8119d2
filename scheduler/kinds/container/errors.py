"""How a container job attempt fails: each a :class:`~scheduler.errors.JobFailed` (exit 1), its
message the one line recorded for the run."""

from __future__ import annotations

from scheduler.errors import JobFailed


class ContainerFailed(JobFailed):
    """The container ran and ended badly; ``container_exit_code`` is its own exit status (and the
    run's recorded one: ``work_exit_code``)."""

    def __init__(self, message: str, *, container_exit_code: int | None = None, oom_killed: bool = False) -> None:
        super().__init__(message)
        self.container_exit_code = container_exit_code
        self.work_exit_code = container_exit_code
        self.oom_killed = oom_killed


class ContainerTimedOut(ContainerFailed):
    """The job's timeout passed; the container was stopped (grace, then kill) and removed."""


class GpuUnavailable(JobFailed):
    """``gpu_policy: required`` and the engine cannot hand out GPUs."""


class ImageUnavailable(JobFailed):
    """The image is not on the engine and could not (or may not) be pulled."""
