"""The validated config as the long-running processes hold it: plain data, no pydantic.

Validation needs pydantic (about 20 MB of RSS with our models); the daemon and ``run-job`` only
need the result.  So they call :func:`load_compiled`, which validates in a short-lived child
(``python -m scheduler.config.compile``), or reuses that child's result from the private cache
while none of its inputs changed (:mod:`scheduler.config.cache`), and rebuilds it here from JSON as
:class:`View` objects: read-only attribute access with the same names and value types as the
pydantic models (durations are ``timedelta``, lists are tuples), so code reading a spec works
on either.  Workers re-validate a job's JSON form (:func:`spec_json`) with the real model.

Invariant: a :class:`Config` only ever holds data that passed ``load_config``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scheduler.errors import ConfigError, ConfigIssue
from scheduler.schedule import Schedule

COMPILE_TIMEOUT = 60


@dataclass(frozen=True)
class Config:
    """A validated configuration.  Immutable; ``digest`` identifies its content.

    ``jobs`` and the sections hold pydantic models (from ``load_config``) or :class:`View`
    objects (from :func:`load_compiled`), which read alike.
    """

    jobs: Mapping[str, Any]
    daemon: Any
    state: Any
    http: Any
    docker: Any
    secrets: frozenset[str] = frozenset()
    sources: tuple[str, ...] = ()
    digest: str = ""
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    def job(self, name: str) -> Any:
        return self.jobs[name]


class View:
    """Read-only attribute view of one validated model, decoded from the compile child's JSON."""

    __slots__ = ("_fields", "_json")

    def __init__(self, fields: dict[str, Any], json_form: Any = None) -> None:
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_json", json_form)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("config views are read-only")

    def __repr__(self) -> str:
        return f"View({self._fields!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, View) and self._fields == other._fields

    def __hash__(self) -> int:
        return id(self)


# --- the wire format between the compile child and us -------------------------------------------
def encode(value: Any) -> Any:
    """Model tree -> JSON-safe data that keeps models, durations and mappings apart."""
    from pydantic import BaseModel  # only the compile child encodes

    if isinstance(value, BaseModel):
        fields = {name: encode(getattr(value, name)) for name in type(value).model_fields}
        return {"$m": fields, "$j": value.model_dump(mode="json", by_alias=True)}
    if isinstance(value, timedelta):
        return {"$td": value.total_seconds()}
    if isinstance(value, dict):
        return {"$d": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$m" in value:
            return View({k: decode(v) for k, v in value["$m"].items()}, value.get("$j"))
        if "$td" in value:
            return timedelta(seconds=value["$td"])
        if "$d" in value:
            return {k: decode(v) for k, v in value["$d"].items()}
        return value
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value


def spec_json(spec: Any) -> Any:
    """The JSON form of a spec (model or view) that the real model re-validates."""
    if isinstance(spec, View):
        return spec._json
    return spec.model_dump(mode="json", by_alias=True)


def command_argv(spec: Any) -> list[str]:
    """The argv of a ``command`` job: its ``command`` list, or ``/bin/sh -c`` its ``shell``."""
    if spec.shell is not None:
        return ["/bin/sh", "-c", spec.shell]
    return list(spec.command)


def dump_compiled(config: Config) -> str:
    return json.dumps({
        "jobs": {name: encode(spec) for name, spec in config.jobs.items()},
        "sections": {name: encode(getattr(config, name)) for name in ("daemon", "state", "http", "docker")},
        "secrets": sorted(config.secrets), "sources": list(config.sources), "digest": config.digest,
    })


def load_compiled(path: Path | str, cache: Any = "default") -> Config:
    """Validate ``path`` in a child process and return the config without importing pydantic.

    A result cached for the same inputs (:mod:`scheduler.config.cache`) is reused instead of
    running the child; ``cache=None`` always compiles.  Raises :class:`ConfigError` with every
    problem the child found.
    """
    if cache == "default":
        from scheduler.config.cache import CompileCache

        cache = CompileCache.default()
    text = cache.lookup(str(path)) if cache is not None else None
    payload = json.loads(text) if text is not None else _compile(path, cache)
    jobs = {name: decode(spec) for name, spec in payload["jobs"].items()}
    sections = {name: decode(value) for name, value in payload["sections"].items()}
    schedules = {name: Schedule(cron=spec.schedule, every=spec.every, tz=spec.timezone, jitter=spec.jitter)
                 for name, spec in jobs.items()}
    return Config(jobs=MappingProxyType(jobs), secrets=frozenset(payload["secrets"]),
                  sources=tuple(payload["sources"]), digest=payload["digest"],
                  schedules=MappingProxyType(schedules), **sections)


def _compile(path: Path | str, cache: Any) -> dict[str, Any]:
    """Run the compile child; store a valid result in ``cache`` (when given) under its inputs."""
    argv = [sys.executable, "-m", "scheduler.config.compile", str(path)] + (["--inputs"] if cache else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=os.getcwd(),
                              timeout=COMPILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"config check did not finish within {COMPILE_TIMEOUT}s "
                          "(a *_file pointing at a pipe or a hung mount?)") from None
    try:
        payload: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"config check failed: {detail}") from None
    if "issues" in payload:
        raise ConfigError([ConfigIssue(**issue) for issue in payload["issues"]])
    inputs, digest = payload.pop("inputs", None), payload.pop("material", None)
    if cache is not None and inputs is not None and digest:
        from scheduler.config.inputs import Inputs

        cache.store(str(path), Inputs.from_json(inputs), digest, json.dumps(payload))
    return payload
