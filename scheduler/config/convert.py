"""Validated pydantic models -> the typed, frozen config every process reads (:mod:`.compiled`).

:func:`compile_config` is the one place the conversion happens: ``load_config`` calls it
in-process, and the compile child calls it (through ``load_config``) before sending the result to
``load_compiled``, so both hand out the same :class:`~scheduler.config.compiled.Config`.

Invariants: every field of :class:`~scheduler.config.jobs.JobBase` and of the ``daemon:``,
``state:`` and ``http:`` models is a field of its dataclass (``tests/config/test_compiled.py``
checks it); kind-specific fields reach the daemon side only as listed in :data:`DAEMON_KIND_FIELDS`
and always reach the worker in the job's JSON form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from scheduler.config import compiled
from scheduler.config.jobs import JobBase
from scheduler.config.notifiers import Notifier as NotifierModel
from scheduler.config.notifiers import Ping as PingModel
from scheduler.config.settings import DaemonSettings, HttpSettings, StateSettings

# The kind-specific fields read outside the worker: a command job's argv and working directory
# (the runner starts it directly), and the directory a python job's worker starts in.
DAEMON_KIND_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "command": ("command", "shell", "cwd"),
    "python": ("cwd",),
})


@dataclass(frozen=True)
class Validated:
    """The loader's result before conversion: pydantic models (``load_models``)."""

    jobs: Mapping[str, JobBase]
    daemon: DaemonSettings
    state: StateSettings
    http: HttpSettings
    docker: BaseModel  # the container kind's section (config/ names no kind)
    secrets: frozenset[str]
    sources: tuple[str, ...]
    digest: str


def json_form(model: BaseModel) -> dict[str, Any]:
    """What a worker re-validates: the model dumped by alias, JSON-safe."""
    return model.model_dump(mode="json", by_alias=True)


def _notifiers(models: tuple[NotifierModel, ...]) -> tuple[compiled.Notifier, ...]:
    return tuple(compiled.Notifier(url=n.url, format=n.format, timeout=n.timeout, retries=n.retries,
                                   routing_key=n.routing_key, severity=n.severity, priority=n.priority, tags=n.tags,
                                   token=n.token) for n in models)


def _ping(model: PingModel | None) -> compiled.Ping | None:
    if model is None:
        return None
    return compiled.Ping(url=model.url, timeout=model.timeout, retries=model.retries, send_log=model.send_log)


def compile_job(spec: JobBase) -> compiled.CompiledJob:
    """One job spec as the daemon side reads it (see :class:`~scheduler.config.compiled.CompiledJob`)."""
    dumped = json_form(spec)
    kind_fields = {name: getattr(spec, name) for name in DAEMON_KIND_FIELDS.get(spec.kind, ())}
    return compiled.CompiledJob(
        kind=spec.kind, description=spec.description, enabled=spec.enabled,
        schedule=spec.schedule, every=spec.every, timezone=spec.timezone, jitter=spec.jitter, after=spec.after,
        catchup=spec.catchup, max_catchup=spec.max_catchup,
        timeout=spec.timeout, kill_grace=spec.kill_grace, retries=spec.retries, retry_delay=spec.retry_delay,
        retry_max_delay=spec.retry_max_delay, concurrency=spec.concurrency,
        env=MappingProxyType(dict(spec.env)),
        params=MappingProxyType(spec.model_dump(mode="json", include={"params"})["params"]),
        on_failure=_notifiers(spec.on_failure), on_recovery=_notifiers(spec.on_recovery),
        on_success=_notifiers(spec.on_success), expect_success_within=spec.expect_success_within,
        ping=_ping(spec.ping), run_on_start=spec.run_on_start, pause_after_failures=spec.pause_after_failures,
        json=json.dumps(dumped), **kind_fields,
    )


def compile_config(models: Validated) -> compiled.Config:
    """The typed config of validated models: the only conversion from pydantic to dataclasses."""
    jobs = MappingProxyType({name: compile_job(spec) for name, spec in models.jobs.items()})
    daemon, state, http = models.daemon, models.state, models.http
    return compiled.Config(
        jobs=jobs,
        daemon=compiled.DaemonSettings(shutdown_grace=daemon.shutdown_grace, log_level=daemon.log_level,
                                       log_format=daemon.log_format, max_parallel_runs=daemon.max_parallel_runs),
        state=compiled.StateSettings(backend=state.backend, path=state.path, url=state.url,
                                     lease_ttl=state.lease_ttl, max_output=state.max_output,
                                     keep_runs=state.keep_runs, keep_days=state.keep_days),
        http=compiled.HttpSettings(listen=http.listen, api_token=http.api_token, stale_after=http.stale_after,
                                   base_path=http.base_path),
        docker=compiled.DockerSection(json=json.dumps(json_form(models.docker))),
        secrets=models.secrets, sources=models.sources, digest=models.digest,
        schedules=compiled.schedules_of(jobs),
    )
