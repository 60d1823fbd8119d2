"""Job kinds: what an attempt does.

Each kind is one record in :mod:`scheduler.kinds.registry` (its model, how it runs, the config
sections it owns, the daemon's steps for it) and one module or package here beside it:
``command`` runs as its own child process (see ``runner``); ``python``, ``ingest`` and
``container`` run inside the worker child.  Everything is named by import path and imported on
first use, so the daemon never imports pydantic, pandas, pyarrow or the docker SDK.
"""

from __future__ import annotations

from scheduler.kinds.base import Executor, RunContext
from scheduler.kinds.registry import BUILTIN, Kind, Registry, current, resolve

__all__ = ["BUILTIN", "Executor", "Kind", "Registry", "RunContext", "current", "resolve"]
