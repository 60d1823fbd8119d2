"""The ``python`` kind: its job model, and the executor that imports ``module:function`` and calls it.

The function receives a :class:`~scheduler.kinds.base.RunContext`; it may return ``None`` or a
dict of metrics (``rows_written`` and friends, optionally ``watermark``).  Any exception fails the
run with its text as the reason.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from scheduler.config.jobs import JobBase
from scheduler.config.types import FunctionRef
from scheduler.kinds import registry
from scheduler.kinds.base import RunContext


class PythonJob(JobBase):
    """Call ``module:function`` (importable from the project root, e.g. ``jobs.report:build``)."""

    kind: Literal["python"] = Field(description="python: call package.module:function in a child process.")
    function: FunctionRef = Field(description="package.module:function, called as function(ctx) in a child process.")
    cwd: str | None = Field(
        default=None, description="Working directory, also put first on PYTHONPATH (default: the daemon's).")


def resolve(ref: str) -> Any:
    """Import ``package.module:function``; raises ImportError/AttributeError with a clear text."""
    return registry.resolve(ref, noun="function")


def execute(spec: PythonJob, ctx: RunContext) -> dict[str, Any]:
    func = resolve(spec.function)
    result = func(ctx)
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"{spec.function} returned {type(result).__name__}; return a dict of metrics or None")
    return result
