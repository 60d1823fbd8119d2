"""The ``python`` kind: import ``module:function`` and call it with the run's context.

The function receives a :class:`~scheduler.kinds.base.RunContext`; it may return ``None`` or a
dict of metrics (``rows_written`` and friends, optionally ``watermark``).  Any exception fails the
run with its text as the reason.
"""

from __future__ import annotations

import importlib
from typing import Any

from scheduler.config.jobs import PythonJob
from scheduler.kinds.base import RunContext


def resolve(ref: str) -> Any:
    """Import ``package.module:function``; raises ImportError/AttributeError with a clear text."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"module '{module_name}' has no function '{attr}'") from None


def execute(spec: PythonJob, ctx: RunContext) -> dict[str, Any]:
    func = resolve(spec.function)
    result = func(ctx)
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"{spec.function} returned {type(result).__name__}; return a dict of metrics or None")
    return result
