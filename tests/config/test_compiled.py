"""The compiled config: typed dataclasses, the same whether validated in-process or in a child.

``load_config`` (pydantic, in-process) and ``load_compiled`` (validated in a child, held without
pydantic) must hand out equal :class:`Config` objects, and every field of the compiled form must
carry its model's value, so a field added to a model but missing from the compiled form fails here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from scheduler.config import compiled, load_compiled, load_config
from scheduler.config.compiled import CompiledJob, spec_json
from scheduler.config.convert import DAEMON_KIND_FIELDS
from scheduler.config.jobs import JobBase
from scheduler.config.loader import JOB_MODELS, load_models
from scheduler.config.notifiers import Notifier
from scheduler.config.settings import DaemonSettings, HttpSettings, StateSettings
from scheduler.errors import ConfigError
from scheduler.kinds.command import command_argv
from scheduler.kinds.container.settings import DockerSettings

REPO = Path(__file__).resolve().parents[2]
GOOD = Path(__file__).parent / "good"
JOB_FIELDS = {f.name for f in dataclasses.fields(CompiledJob)} - {"json"}
KIND_FIELDS = {name for names in DAEMON_KIND_FIELDS.values() for name in names}
SECTION_MODELS: dict[str, type[BaseModel]] = {"daemon": DaemonSettings, "state": StateSettings, "http": HttpSettings}

# Two configs that, between them, set every key of the common job fields, of the command and
# python kinds' daemon-side fields and of the daemon:, state: and http: sections to a value that is
# not its default (some keys exclude each other: schedule/every, command/shell, state path/url).
EVERY_KEY = ["""
daemon: {shutdown_grace: 3s, log_level: debug, log_format: json, max_parallel_runs: 7}
state: {backend: postgres, url: "postgresql://sched:pw-for-the-test@db:5432/scheduler"}
http: {listen: "127.0.0.1:0", api_token: tok-0123456789abcdef, stale_after: 30s, base_path: /scheduler}
docker: {instance: ci, allowed_images: ["busybox*"], stop_grace: 4s, timeout: 20s}
jobs:
  upstream: {kind: command, shell: "true"}
  every_key:
    kind: command
    description: every key set
    enabled: false
    schedule: "*/5 * * * *"
    timezone: Europe/Berlin
    jitter: 7s
    after: [upstream]
    catchup: all
    max_catchup: 3
    timeout: 90
    kill_grace: 2s
    retries: 4
    retry_delay: 3s
    retry_max_delay: 1m
    concurrency: replace
    run_on_start: true
    pause_after_failures: 3
    env: {A: "1", B: two}
    params: {size: 20, tags: [x, y], nested: {k: v}}
    on_failure: [{url: "http://127.0.0.1:9/f", format: slack, timeout: 2s, retries: 1},
                 {url: "http://127.0.0.1:9/pd", format: pagerduty, routing_key: rk-0123456789, severity: info}]
    on_recovery: [{url: "http://127.0.0.1:9/r", format: ntfy, priority: low, tags: [a, b], token: ntfy-token-1}]
    on_success: [{url: "http://127.0.0.1:9/s", format: discord}]
    expect_success_within: 2h
    ping: {url: "http://127.0.0.1:9/ping/check", timeout: 3s, retries: 2, send_log: false}
    command: [echo, hi]
    cwd: /tmp
""", """
state: {backend: sqlite, path: /tmp/elsewhere/state.db, lease_ttl: 45s, max_output: 64k, keep_runs: 7,
        keep_days: 2.5}
jobs:
  interval: {kind: command, every: 10m, shell: "echo $A"}
  py: {kind: python, function: "jobs.example:run", cwd: /srv}
"""]


def _same(expected: Any, actual: Any, path: str) -> None:
    """A model value reads the same through the compiled form: models as their dataclasses,
    mappings as read-only mappings, tuples as tuples, everything else equal and of the same type."""
    if isinstance(expected, BaseModel):
        assert dataclasses.is_dataclass(actual), path
        assert {f.name for f in dataclasses.fields(actual)} == set(type(expected).model_fields), path
        for name in type(expected).model_fields:
            _same(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
    elif isinstance(expected, dict):
        assert isinstance(actual, Mapping) and dict(actual) == expected, path
        with pytest.raises(TypeError):
            actual["added"] = 1  # type: ignore[index]  # read-only: the assignment must fail
    elif isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _same(e, a, f"{path}.{i}")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: {actual!r} != {expected!r}"


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def test_the_compiled_job_has_every_common_field_and_only_known_ones() -> None:
    assert set(JobBase.model_fields) <= JOB_FIELDS, "a JobBase field is missing from CompiledJob"
    assert JOB_FIELDS - set(JobBase.model_fields) == KIND_FIELDS
    for kind, names in DAEMON_KIND_FIELDS.items():
        assert set(names) <= set(JOB_MODELS[kind].model_fields), kind
    assert {f.name for f in dataclasses.fields(compiled.Notifier)} == set(Notifier.model_fields)
    for name, model in SECTION_MODELS.items():
        section = {"daemon": compiled.DaemonSettings, "state": compiled.StateSettings, "http": compiled.HttpSettings}
        assert {f.name for f in dataclasses.fields(section[name])} == set(model.model_fields), name


def test_every_field_survives_the_compile_child(write_config: Any) -> None:
    not_default: set[str] = set()
    for i, text in enumerate(EVERY_KEY):
        path = write_config(text, name=f"every-{i}.yaml")
        models, config = load_models(path, env={}), load_compiled(path)
        assert set(config.jobs) == set(models.jobs)
        for name, model in models.jobs.items():
            job = config.jobs[name]
            assert type(job) is CompiledJob
            for field in JOB_FIELDS:
                if field in DAEMON_KIND_FIELDS.get(model.kind, ()) or field in JobBase.model_fields:
                    _same(getattr(model, field), getattr(job, field), f"{name}.{field}")
                    if getattr(model, field) != _default(type(model), field):
                        not_default.add(f"job.{field}")
                else:
                    assert getattr(job, field) is None, f"{name}.{field}"
            assert type(model).model_validate(spec_json(job)) == model  # what the worker rebuilds
        for section, model_class in SECTION_MODELS.items():
            model = getattr(models, section)
            _same(model, getattr(config, section), section)
            not_default |= {f"{section}.{n}" for n in model_class.model_fields
                            if getattr(model, n) != _default(model_class, n)}
        assert DockerSettings.model_validate(spec_json(config.docker)) == models.docker
    every = {f"job.{n}" for n in JOB_FIELDS if n != "kind"} | {
        f"{section}.{n}" for section, model_class in SECTION_MODELS.items() for n in model_class.model_fields}
    assert every - not_default == set(), "the configs above must set these keys to a value that is not the default"


@pytest.mark.parametrize("path", [REPO / "config" / "jobs.yaml", GOOD / "all-kinds.yaml"], ids=lambda p: p.name)
def test_load_config_and_load_compiled_give_the_same_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text()
    for name in ("SALES_API_URL", "API_URL", "ORDERS_API_URL"):
        if "${" + name + "}" in text:
            monkeypatch.setenv(name, "http://127.0.0.1:8080")
    direct, child = load_config(path, env=dict(os.environ)), load_compiled(path)
    assert child == direct and hash(child) == hash(direct)
    assert (child.secrets, child.sources, child.digest) == (direct.secrets, direct.sources, direct.digest)
    models = load_models(path, env=dict(os.environ))
    for name, model in models.jobs.items():
        job = child.jobs[name]
        assert type(job) is CompiledJob and job == direct.jobs[name]
        for field in KIND_FIELDS:
            kept = field in DAEMON_KIND_FIELDS.get(model.kind, ())
            assert getattr(job, field) == (getattr(model, field) if kept else None), f"{name}.{field}"
        assert type(model).model_validate(spec_json(job)) == model
    described = [{n: s.describe() for n, s in c.schedules.items()} for c in (child, direct)]
    assert described[0] == described[1] and set(described[0]) == set(models.jobs)


def test_compiled_jobs_are_frozen_and_hash_like_they_compare(write_config: Any) -> None:
    path = write_config("""
        jobs:
          sh: {kind: command, shell: "echo hi", timeout: 90, env: {A: "1"}}
          same: {kind: command, shell: "echo hi", timeout: 90, env: {A: "1"}}
    """)
    config = load_compiled(path)
    spec = config.jobs["sh"]
    assert spec.timeout == timedelta(seconds=90) and spec.env == {"A": "1"} and spec.after == ()
    assert command_argv(spec) == ["/bin/sh", "-c", "echo hi"]
    with pytest.raises(AttributeError):
        spec.timeout = timedelta(seconds=5)  # type: ignore[misc]  # frozen: the assignment must fail
    with pytest.raises(AttributeError):
        _ = spec.no_such_field  # type: ignore[attr-defined]  # slotted: no such attribute
    with pytest.raises(TypeError):
        spec.env["B"] = "2"  # type: ignore[index]  # read-only mapping
    in_process = load_config(path).jobs["sh"]
    assert spec == config.jobs["same"] == in_process
    assert len({spec, config.jobs["same"], in_process}) == 1  # equal values land once in a set
    changed = dataclasses.replace(spec, retries=3)
    assert changed != spec and len({spec, changed}) == 2


def test_secrets_stay_out_of_reprs(write_config: Any) -> None:
    config = load_compiled(write_config("""
        state: {backend: postgres, url: "postgresql://sched:pw-9f8e7d6c@db/x"}
        http: {listen: "127.0.0.1:0", api_token: tok-0123456789abcdef}
        jobs:
          sh:
            kind: command
            shell: "true"
            env: {DB_PASSWORD: env-secret-value}
            on_failure: [{url: "https://hooks.example.com/T0/B1/hook-secret-part"}]
    """))
    shown = repr(config)
    for secret in ("pw-9f8e7d6c", "tok-0123456789abcdef", "env-secret-value", "hook-secret-part"):
        assert secret not in shown


def test_compiled_config_errors_are_the_loaders(write_config: Any) -> None:
    path = write_config("jobs:\n  x:\n    kind: command\n    schedul: '* * * * *'\n    shell: echo\n")
    with pytest.raises(ConfigError) as compiled_error:
        load_compiled(path)
    with pytest.raises(ConfigError) as direct:
        load_config(path)
    assert str(compiled_error.value) == str(direct.value)
    assert str(compiled_error.value).endswith(
        "jobs.yaml:4: job 'x': schedul: unknown key 'schedul' (did you mean 'schedule'?)")
