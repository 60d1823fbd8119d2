"""The ``container`` job kind: a sibling container started through the Docker Engine API.

``spec`` (config models, no Docker SDK) is imported eagerly; the runtime (``execute``,
``cleanup_orphans``, ``stop_all``) is imported on first use, so loading and validating a config
never imports the SDK.
"""

from __future__ import annotations

from typing import Any

from scheduler.kinds.container.settings import DockerSettings, check_against_settings
from scheduler.kinds.container.spec import ContainerJob

__all__ = ["ContainerJob", "DockerSettings", "check_against_settings", "cleanup_orphans", "execute", "stop_all"]

_RUNTIME = {"execute", "cleanup_orphans", "stop_all", "ContainerFailed", "ContainerTimedOut", "GpuUnavailable"}


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from scheduler.kinds.container import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
