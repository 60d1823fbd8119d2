"""Job kinds: what an attempt does.

``command`` runs as its own child process (see ``runner``); the in-process kinds below run inside
the worker child.  Entry points are named as strings and imported lazily so the daemon never
imports pandas, pyarrow or the docker SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from scheduler.kinds.base import Executor, RunContext

EXECUTORS: Mapping[str, str] = MappingProxyType({
    "python": "scheduler.kinds.python:execute",
    "ingest": "scheduler.kinds.ingest:execute",
    "container": "scheduler.kinds.container:execute",
})


def executor_for(kind: str) -> Executor:
    module, _, attr = EXECUTORS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["EXECUTORS", "Executor", "RunContext", "executor_for"]
