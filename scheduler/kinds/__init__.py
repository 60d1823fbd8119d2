"""Job kinds: what an attempt does.

``command`` runs as its own child process (see ``runner``); the in-process kinds below run inside
the worker child.  Entry points are named as strings and imported lazily so the daemon never
imports pandas, pyarrow or the docker SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from scheduler.kinds.base import Executor, RunContext

# The spec model of each in-process kind, so a worker builds only the one it runs.
SPECS: Mapping[str, str] = MappingProxyType({
    "python": "scheduler.config.jobs:PythonJob",
    "ingest": "scheduler.kinds.ingest.spec:IngestJob",
    "container": "scheduler.kinds.container.spec:ContainerJob",
})
EXECUTORS: Mapping[str, str] = MappingProxyType({
    "python": "scheduler.kinds.python:execute",
    "ingest": "scheduler.kinds.ingest:execute",
    "container": "scheduler.kinds.container:execute",
})


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def executor_for(kind: str) -> Executor:
    return _resolve(EXECUTORS[kind])


def spec_model(kind: str) -> Any:
    """The pydantic model class of an in-process kind's job spec."""
    return _resolve(SPECS[kind])


__all__ = ["EXECUTORS", "SPECS", "Executor", "RunContext", "executor_for", "spec_model"]
