"""The validated config as every process holds it: typed, frozen dataclasses, no pydantic.

Validation needs pydantic (about 20 MB of RSS with our models); the daemon and ``run-job`` only
need the result.  ``load_config`` validates in-process and converts the models with
:func:`scheduler.config.convert.compile_config`; :func:`load_compiled` runs the same in a
short-lived child (``python -m scheduler.config.compile``), or reuses that child's result from the
private cache while none of its inputs changed (:mod:`scheduler.config.cache`), and rebuilds the
identical :class:`Config` here from JSON.  Either way code reads a :class:`CompiledJob`, whose attributes
mypy checks; workers re-validate a job's JSON form (:func:`spec_json`) with the real model.

Invariants: a :class:`Config` only ever holds data that passed ``load_config``; every class here
is frozen, so equal values hash alike (mapping fields, which cannot hash, are left out of the
hash and still compared); ``load_config(p) == load_compiled(p)`` field for field.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from scheduler.errors import ConfigError, ConfigIssue
from scheduler.schedule import Schedule

COMPILE_TIMEOUT = 60


@dataclass(frozen=True, slots=True)
class Notifier:
    """A webhook called on run outcomes (``on_failure``, ``on_recovery``, ``on_success``)."""

    url: str = field(repr=False)  # a webhook URL often carries its token
    format: Literal["json", "slack", "discord", "ntfy", "pagerduty"]
    timeout: timedelta
    retries: int
    routing_key: str | None = field(default=None, repr=False)  # a secret
    severity: Literal["critical", "error", "warning", "info"] | None = None
    priority: int | str | None = None
    tags: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)  # a secret


@dataclass(frozen=True, slots=True)
class Ping:
    """A job's healthchecks.io check (``ping:``): start, success and failure pings."""

    url: str = field(repr=False)  # the check's UUID is its credential
    timeout: timedelta
    retries: int
    send_log: bool

    @property
    def format(self) -> str:
        """Delivery reads every target's format: a ping's is always ``healthchecks``."""
        return "healthchecks"


@dataclass(frozen=True, slots=True)
class CompiledJob:
    """One job as the daemon, planner, runner and operations features read it.

    The fields every kind has, plus the few kind-specific ones read outside the worker
    (``command``/``shell``/``cwd`` of a ``command`` job, ``cwd`` of a ``python`` job; ``None``
    for other kinds).  Everything else a kind needs travels in ``json``, the model's JSON form,
    which the worker re-validates.  ``env`` and ``params`` are read-only mappings; ``params``
    holds JSON values, as the worker receives them.
    """

    kind: str
    description: str
    enabled: bool
    schedule: str | None
    every: timedelta | None
    timezone: str
    jitter: timedelta
    after: tuple[str, ...]
    catchup: Literal["none", "latest", "all"]
    max_catchup: int
    timeout: timedelta | None
    kill_grace: timedelta
    retries: int
    retry_delay: timedelta
    retry_max_delay: timedelta
    concurrency: Literal["allow", "forbid", "replace", "queue"]
    env: Mapping[str, str] = field(hash=False, repr=False)  # values may be secrets
    params: Mapping[str, Any] = field(hash=False)
    on_failure: tuple[Notifier, ...]
    on_recovery: tuple[Notifier, ...]
    on_success: tuple[Notifier, ...]
    expect_success_within: timedelta | None
    ping: Ping | None
    run_on_start: bool
    pause_after_failures: int | None
    json: str = field(repr=False)  # JSON text, so it is immutable and hashes; may hold secrets
    command: tuple[str, ...] | None = None
    shell: str | None = None
    cwd: str | None = None


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The ``daemon:`` section."""

    shutdown_grace: timedelta
    log_level: Literal["debug", "info", "warning", "error"]
    log_format: Literal["auto", "json", "console"]
    max_parallel_runs: int


@dataclass(frozen=True, slots=True)
class StateSettings:
    """The ``state:`` section: a SQLite file or a PostgreSQL URL."""

    backend: Literal["sqlite", "postgres"]
    path: str | None
    url: str | None = field(repr=False)  # holds the password
    lease_ttl: timedelta
    max_output: int
    keep_runs: int | None
    keep_days: float | None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The ``http:`` section: the operations endpoint."""

    listen: str | None
    api_token: str | None = field(repr=False)
    stale_after: timedelta
    base_path: str = ""  # "" or "/prefix" (no trailing slash)


@dataclass(frozen=True, slots=True)
class DockerSection:
    """The ``docker:`` section, as its JSON form: the daemon reads none of its fields and hands it
    to the children that talk to the engine (workers, orphan cleanup), which re-validate it."""

    json: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration.  Immutable; ``digest`` identifies its content."""

    jobs: Mapping[str, CompiledJob] = field(hash=False)
    daemon: DaemonSettings
    state: StateSettings
    http: HttpSettings
    docker: DockerSection
    secrets: frozenset[str] = field(default=frozenset(), repr=False)  # values to mask, never to show
    sources: tuple[str, ...] = ()
    digest: str = ""
    schedules: Mapping[str, Schedule] = field(default_factory=dict, hash=False, compare=False)  # from jobs

    def job(self, name: str) -> CompiledJob:
        return self.jobs[name]


def schedules_of(jobs: Mapping[str, CompiledJob]) -> Mapping[str, Schedule]:
    """Each job's :class:`Schedule` (the one way both loaders build them)."""
    return MappingProxyType({name: Schedule(cron=spec.schedule, every=spec.every, tz=spec.timezone, jitter=spec.jitter)
                             for name, spec in jobs.items()})


def spec_json(spec: CompiledJob | DockerSection) -> dict[str, Any]:
    """The JSON form of a job or the ``docker:`` section, which the real model re-validates."""
    value: dict[str, Any] = json.loads(spec.json)
    return value


# --- the wire format between the compile child and us -------------------------------------------
# Dataclasses are tagged with their name, durations kept exact, mappings kept apart from
# dataclasses (their values are JSON data, never decoded further); tuples travel as lists.
_WIRE: Mapping[str, type[Any]] = {cls.__name__: cls for cls in (
    CompiledJob, Notifier, Ping, DaemonSettings, StateSettings, HttpSettings, DockerSection)}
_SECTIONS = ("daemon", "state", "http", "docker")


def encode(value: Any) -> Any:
    """A compiled value -> JSON-safe data that :func:`decode` turns back into an equal value."""
    if _WIRE.get(type(value).__name__) is type(value):
        return {"$c": type(value).__name__, "f": {f.name: encode(getattr(value, f.name)) for f in fields(value)}}
    if isinstance(value, timedelta):
        return {"$td": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Mapping):
        return {"$d": dict(value)}
    if isinstance(value, tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$c" in value:
            return _WIRE[value["$c"]](**{k: decode(v) for k, v in value["f"].items()})
        if "$td" in value:
            days, seconds, microseconds = value["$td"]
            return timedelta(days=days, seconds=seconds, microseconds=microseconds)
        if "$d" in value:
            return MappingProxyType(value["$d"])
        raise ValueError(f"untagged mapping in compiled config: {sorted(value)}")
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    return value


def dump_compiled(config: Config) -> str:
    return json.dumps({
        "jobs": {name: encode(spec) for name, spec in config.jobs.items()},
        "sections": {name: encode(getattr(config, name)) for name in _SECTIONS},
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
    jobs: dict[str, CompiledJob] = {name: decode(spec) for name, spec in payload["jobs"].items()}
    sections = {name: decode(payload["sections"][name]) for name in _SECTIONS}
    return Config(jobs=MappingProxyType(jobs), secrets=frozenset(payload["secrets"]),
                  sources=tuple(payload["sources"]), digest=payload["digest"], schedules=schedules_of(jobs),
                  **sections)


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

        cache.store(str(path), Inputs.from_json(inputs), digest, json.dumps(payload), secrets=bool(payload["secrets"]))
    return payload
