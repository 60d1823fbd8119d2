"""Configuration: load YAML job definitions into frozen, validated models.

Use :func:`load_config`; it returns a :class:`Config` or raises ``ConfigError`` listing every
problem with file, line, job and field.  Long-running processes use :func:`load_compiled`, which
validates in a child process so they never import pydantic.  The names below are imported on first use, so a kind's
``spec`` module (which the loader imports) can itself import ``scheduler.config.jobs`` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.config.compiled import Config, load_compiled
    from scheduler.config.loader import JOB_MODELS, config_files, load_config
    from scheduler.config.schema import json_schema

__all__ = ["JOB_MODELS", "Config", "config_files", "json_schema", "load_compiled", "load_config"]
_PYDANTIC_FREE = {"Config", "load_compiled"}


def __getattr__(name: str) -> Any:
    if name in _PYDANTIC_FREE:
        from scheduler.config import compiled

        return getattr(compiled, name)
    if name == "json_schema":
        from scheduler.config import schema

        return schema.json_schema
    if name in __all__:
        from scheduler.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'scheduler.config' has no attribute {name!r}")
