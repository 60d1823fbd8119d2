"""The compiled config (validated in a child, held without pydantic) reads like the models."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from scheduler.config import load_compiled, load_config
from scheduler.config.compiled import View, command_argv, spec_json
from scheduler.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GOOD = Path(__file__).parent / "good"


def _same(expected, actual, path="") -> None:
    """A model tree reads the same through its compiled view: models, mappings, tuples, values."""
    if isinstance(expected, BaseModel):
        assert isinstance(actual, View), path
        for name in type(expected).model_fields:
            _same(getattr(expected, name), getattr(actual, name), f"{path}.{name}")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), path
        for key in expected:
            _same(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _same(e, a, f"{path}.{i}")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("path", [REPO / "config" / "jobs.yaml", GOOD / "all-kinds.yaml"], ids=lambda p: p.name)
def test_compiled_reads_like_the_models(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text()
    for name in ("SALES_API_URL", "API_URL", "ORDERS_API_URL"):
        if "${" + name + "}" in text:
            monkeypatch.setenv(name, "http://127.0.0.1:8080")
    models, views = load_config(path, env=dict(os.environ)), load_compiled(path)
    assert set(models.jobs) == set(views.jobs)
    for name, model in models.jobs.items():
        _same(model, views.jobs[name], name)
        assert spec_json(views.jobs[name]) == spec_json(model)
        assert type(model).model_validate(spec_json(views.jobs[name])) == model
    for section in ("daemon", "state", "http", "docker"):
        _same(getattr(models, section), getattr(views, section), section)
    assert (views.secrets, views.sources, views.digest) == (models.secrets, models.sources, models.digest)
    assert ({n: s.describe() for n, s in views.schedules.items()}
            == {n: s.describe() for n, s in models.schedules.items()})


def test_views_are_read_only_and_typed(write_config) -> None:
    config = load_compiled(write_config("""
        jobs:
          sh: {kind: command, shell: "echo hi", timeout: 90, env: {A: "1"}}
    """))
    spec = config.jobs["sh"]
    assert spec.timeout == timedelta(seconds=90) and spec.env == {"A": "1"} and spec.after == ()
    assert command_argv(spec) == ["/bin/sh", "-c", "echo hi"]
    with pytest.raises(AttributeError):
        spec.timeout = 5
    with pytest.raises(AttributeError):
        _ = spec.no_such_field


def test_compiled_config_errors_are_the_loaders(write_config) -> None:
    path = write_config("jobs:\n  x:\n    kind: command\n    schedul: '* * * * *'\n    shell: echo\n")
    with pytest.raises(ConfigError) as compiled:
        load_compiled(path)
    with pytest.raises(ConfigError) as direct:
        load_config(path)
    assert str(compiled.value) == str(direct.value)
    assert str(compiled.value).endswith(
        "jobs.yaml:4: job 'x': schedul: unknown key 'schedul' (did you mean 'schedule'?)")
