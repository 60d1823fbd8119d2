"""``scheduler schema`` accepts exactly what the loader accepts: README, config/, and both corpora.

Every YAML block of README.md and every file in ``config/`` must pass the loader and the schema;
every config of the rejected corpus below must fail both.  The duration pattern is checked
against the parser over every short string of its alphabet, and every model field must carry the
description the schema shows.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from scheduler.config import load_config
from scheduler.config.durations import DURATION_PATTERN, parse_duration
from scheduler.config.loader import JOB_MODELS, SECTIONS
from scheduler.config.schema import json_schema
from scheduler.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(data)]


def loader_issues(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> list[str]:
    """The loader's one-line problems for ``data`` written as a YAML file ([] when it loads)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    try:
        load_config(path, env=env if env is not None else {})
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return []


def env_for(text: str) -> dict[str, str]:
    """A value for each ``${VAR}`` without a default (a URL: the one shape they take in the docs)."""
    return {name: URL for name in re.findall(r"\$\{(\w+)\}", text)}


def secret_files_to(tmp_path: Path, node: Any) -> Any:
    """``node`` with every ``*_file`` value pointing at a real file (docs name /run/secrets/...)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_file") and isinstance(value, str):
                target = tmp_path / f"secret-{len(list(tmp_path.iterdir()))}"
                target.write_text("a-long-enough-secret-value\n", encoding="utf-8")
                value = str(target)
            out[key] = secret_files_to(tmp_path, value)
        return out
    if isinstance(node, list):
        return [secret_files_to(tmp_path, v) for v in node]
    return node


# --- README and config/ ---------------------------------------------------------------------------
def readme_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def shipped_jobs() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "jobs.yaml").read_text(encoding="utf-8"))


def as_overlay(block: dict[str, Any]) -> dict[str, Any]:
    """A README block that adds keys to a job of ``config/jobs.yaml`` (it names no ``kind``) is
    read on top of that file, as a user would apply it; any other block stands alone."""
    jobs = block.get("jobs") or {}
    shipped = shipped_jobs()
    if not any(isinstance(spec, dict) and "kind" not in spec and name in shipped["jobs"]
               for name, spec in jobs.items()):
        return block
    merged = {**shipped, **{k: v for k, v in block.items() if k != "jobs"}}
    merged["jobs"] = {**shipped["jobs"]}
    for name, spec in jobs.items():
        merged["jobs"][name] = {**shipped["jobs"].get(name, {}), **spec}
    return merged


def test_readme_has_yaml_blocks() -> None:
    assert len(readme_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_yaml_block_passes_loader_and_schema(index: int, validator: jsonschema.Draft202012Validator,
                                                   tmp_path: Path) -> None:
    text = readme_blocks()[index]
    data = as_overlay(yaml.safe_load(text))
    assert schema_errors(validator, data) == []
    assert loader_issues(tmp_path, secret_files_to(tmp_path, data), env_for(text)) == []


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.y*ml")), ids=lambda p: p.name)
def test_config_file_passes_loader_and_schema(path: Path, validator: jsonschema.Draft202012Validator) -> None:
    text = path.read_text(encoding="utf-8")
    load_config(path, env=env_for(text))
    assert schema_errors(validator, yaml.safe_load(text)) == []  # the raw file, ${VAR} and all


# --- forms both accept ------------------------------------------------------------------------------
def cmd(**extra: Any) -> dict[str, Any]:
    return {"jobs": {"j": {"kind": "command", "shell": "echo", **extra}}}


ACCEPTED: dict[str, dict[str, Any]] = {
    "http-api-token-file": {"http": {"listen": "127.0.0.1:0", "api_token_file": "{secret}"}},
    "bearer-token-file": {"jobs": {"i": {"kind": "ingest", "source": {
        "base_url": "https://e.com", "auth": {"type": "bearer", "token_file": "{secret}"}},
        "sink": {"dataset": "d", "schema": {"a": "int"}}}}},
    "basic-password-file": {"jobs": {"i": {"kind": "ingest", "source": {
        "base_url": "https://e.com", "auth": {"type": "basic", "username": "u", "password_file": "{secret}"}},
        "sink": {"dataset": "d", "schema": {"a": "int"}}}}},
    "interpolated-int": cmd(retries="${RETRIES:-3}"),
    "interpolated-bool": cmd(enabled="${ENABLED:-true}"),
    "interpolated-enum": {"daemon": {"log_level": "${LOG_LEVEL:-info}"}},
    "interpolated-duration": cmd(timeout="${TIMEOUT:-10m}"),
    "interpolated-in-text": {"docker": {"instance": "sched-${HOST_SUFFIX:-a}"}},
    "duration-forms": cmd(timeout="1h 30m", kill_grace="250ms", retry_delay=90, retry_max_delay=1.5),
    "duration-padded": cmd(timeout=" 10m ", jitter="1.5s"),
    "size-forms": {"jobs": {"c": {"kind": "container", "image": "busybox", "memory": "512MiB", "shm_size": 65536}}},
    "required-key-from-defaults": {"defaults": {"image": "busybox"}, "jobs": {"c": {"kind": "container"}}},
    "empty-sections": {"defaults": None, "jobs": None, "daemon": None, "http": None, "docker": None, "state": None},
    "defaults-every-kind-key": {"defaults": {"retries": 2, "image": "busybox", "cwd": "/tmp", "command": ["x"]},
                                "jobs": {"c": {"kind": "container"}}},
    "after-as-string": {"jobs": {"a": {"kind": "command", "shell": "x", "after": "b"},
                                 "b": {"kind": "command", "shell": "y"}}},
    "notifier-formats": cmd(
        ping="https://hc-ping.com/5f3d9a4e-2b1c-4e8f-9a7d-0c1b2a3d4e5f",
        on_failure=[{"url": "https://events.pagerduty.com/v2/enqueue", "format": "pagerduty",
                     "routing_key_file": "{secret}", "severity": "critical"},
                    {"url": "https://discord.com/api/webhooks/1/t", "format": "discord"},
                    {"url": "https://ntfy.sh/topic", "format": "ntfy", "priority": 5, "tags": ["db", "warning"],
                     "token_file": "{secret}"}],
        on_recovery=[{"url": "https://events.pagerduty.com/v2/enqueue", "format": "pagerduty",
                      "routing_key_file": "{secret}"},
                     {"url": "https://ntfy.sh/topic", "format": "ntfy", "priority": "low", "tags": "a,b"}]),
    "ping-mapping": cmd(ping={"url": "https://hc.example/ping/x", "timeout": "5s", "retries": 0, "send_log": False}),
    "gpus-forms": {"jobs": {"a": {"kind": "container", "image": "i", "gpus": "all"},
                            "b": {"kind": "container", "image": "i", "gpus": 2},
                            "c": {"kind": "container", "image": "i", "gpus": ["0", "1"]},
                            "d": {"kind": "container", "image": "i", "gpus": "2"},
                            "e": {"kind": "container", "image": "i", "gpus": [0, "GPU-3f2a"]}}},
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_both_accept(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t-value-long-enough\n", encoding="utf-8")
    data = yaml.safe_load(yaml.safe_dump(ACCEPTED[name]).replace("'{secret}'", str(secret)))
    assert schema_errors(validator, data) == []
    assert loader_issues(tmp_path, data) == []


# --- the rejected corpus: both must refuse --------------------------------------------------------
def ingest(**source: Any) -> dict[str, Any]:
    return {"jobs": {"i": {"kind": "ingest", "source": {"base_url": "https://e.com", **source},
                           "sink": {"dataset": "d", "schema": {"a": "int"}}}}}


def sink(**extra: Any) -> dict[str, Any]:
    return {"jobs": {"i": {"kind": "ingest", "source": {"base_url": "https://e.com"},
                           "sink": {"dataset": "d", "schema": {"a": "int"}, **extra}}}}


def container(**extra: Any) -> dict[str, Any]:
    return {"jobs": {"c": {"kind": "container", "image": "busybox", **extra}}}


REJECTED: dict[str, dict[str, Any]] = {
    # unknown keys
    "top-level-typo": {"jobz": {}},
    "job-key-typo": cmd(schedul="0 * * * *"),
    "section-key-typo": {"daemon": {"log_levl": "info"}},
    "nested-key-typo": ingest(retries={"totl": 3}),
    "defaults-unknown-key": {"defaults": {"retrys": 2}},
    "forbidden-container-key": container(privileged=True),
    "file-key-of-a-mapping": cmd(env_file="/etc/env"),
    # wrong types
    "jobs-as-list": {"jobs": ["a"]},
    "job-as-string": {"jobs": {"a": "echo hi"}},
    "retries-as-text": cmd(retries="three"),
    "enabled-as-text": cmd(enabled="maybe"),
    "env-as-list": cmd(env=["A=1"]),
    "env-null-value": cmd(env={"A": None}),
    "shell-as-list": cmd(shell=["echo"]),
    "after-as-mapping": cmd(after={"a": 1}),
    "command-as-string": {"jobs": {"j": {"kind": "command", "command": "echo hi"}}},
    "gpus-as-bool": container(gpus=True),
    "defaults-wrong-type": {"defaults": {"retries": "many"}},
    "section-as-list": {"http": ["127.0.0.1:8080"]},
    # bad enums
    "unknown-kind": {"jobs": {"x": {"kind": "nope"}}},
    "bad-log-level": {"daemon": {"log_level": "loud"}},
    "bad-concurrency": cmd(concurrency="parallel"),
    "bad-auth-type": ingest(auth={"type": "digest"}),
    "bad-pagination-type": ingest(pagination={"type": "pages"}),
    "bad-sink-mode": sink(mode="upsert"),
    "bad-state-backend": {"state": {"backend": "mysql"}},
    "bad-pull-policy": container(pull="sometimes"),
    "bad-notifier-format": cmd(on_failure=[{"url": "https://hooks.example/x", "format": "teams"}]),
    "bad-pagerduty-severity": cmd(on_failure=[{"url": "https://e.example/v2/enqueue", "format": "pagerduty",
                                               "routing_key": "k-0123456789", "severity": "fatal"}]),
    "ping-without-url": cmd(ping={"retries": 1}),
    # out of range
    "retries-above-100": cmd(retries=101),
    "retries-negative": cmd(retries=-1),
    "max-catchup-zero": cmd(max_catchup=0),
    "notifier-retries-11": cmd(on_failure=[{"url": "https://hooks.example/x", "retries": 11}]),
    "ping-retries-11": cmd(ping={"url": "https://hc.example/ping/x", "retries": 11}),
    "ntfy-priority-9": cmd(on_failure=[{"url": "https://ntfy.sh/t", "format": "ntfy", "priority": 9}]),
    "compression-level-23": sink(compression_level=23),
    "row-group-too-small": sink(row_group_size=999),
    "reject-ratio-above-1": {"jobs": {"i": {**ingest()["jobs"]["i"], "checks": {"max_reject_ratio": 1.5}}}},
    "page-size-zero": ingest(pagination={"type": "page_number", "page_size": 0}),
    "cpus-zero": container(cpus=0),
    "gpus-zero": container(gpus=0),
    "gpus-zero-quoted": container(gpus="0"),
    "gpus-empty-list": container(gpus=[]),
    "empty-sink-schema": {"jobs": {"i": {**ingest()["jobs"]["i"], "sink": {"dataset": "d", "schema": {}}}}},
    # durations, sizes, patterns
    "duration-unknown-unit": cmd(timeout="10x"),
    "duration-words": cmd(jitter="1 hour"),
    "duration-negative": cmd(timeout="-5s"),
    "duration-negative-number": {"daemon": {"shutdown_grace": -1}},
    "duration-as-list": cmd(kill_grace=[1]),
    "duration-exponent": cmd(timeout="1e3"),
    "size-unknown-unit": container(memory="2 gigs"),
    "function-ref-without-colon": {"jobs": {"p": {"kind": "python", "function": "jobs.report.build"}}},
    # required keys and exclusive keys
    "missing-kind": {"jobs": {"x": {"shell": "echo"}}},
    "missing-image": {"jobs": {"c": {"kind": "container"}}},
    "missing-sink": {"jobs": {"i": {"kind": "ingest", "source": {"base_url": "https://e.com"}}}},
    "missing-base-url": {"jobs": {"i": {**ingest()["jobs"]["i"], "source": {"path": "/x"}}}},
    "value-and-file-both": {"http": {"api_token": "a-token-value", "api_token_file": "/run/secrets/x"}},
    "transform-step-unknown": {"jobs": {"i": {**ingest()["jobs"]["i"], "transform": [{"explode": "a"}]}}},
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_both_reject(name: str, validator: jsonschema.Draft202012Validator, tmp_path: Path) -> None:
    data = REJECTED[name]
    assert schema_errors(validator, data) != [], "the schema accepts what the loader rejects"
    issues = loader_issues(tmp_path, data)
    assert issues, "the loader accepts it"
    for line in issues:
        assert not re.search(r"Input should|validation error|pydantic|type=", line), line


# --- durations: the pattern is the parser -----------------------------------------------------------
def parses(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def test_duration_pattern_matches_exactly_what_the_parser_accepts() -> None:
    """Every string of up to 5 characters over the grammar's alphabet (plus a few outsiders)."""
    pattern = re.compile(DURATION_PATTERN)
    alphabet = "10.smhdw -x"
    checked = 0
    for size in range(6):
        for chars in itertools.product(alphabet, repeat=size):
            text = "".join(chars)
            assert bool(pattern.search(text)) == parses(text), repr(text)
            checked += 1
    assert checked > 100_000


@pytest.mark.parametrize("text", ["10m", "1h30m", "1h 30m", " 90 ", "1.5h", "250ms", "10ms5s", "2d", "1w", "0"])
def test_documented_durations_pass_schema_and_parser(text: str, validator: jsonschema.Draft202012Validator) -> None:
    assert parses(text)
    assert schema_errors(validator, {"daemon": {"shutdown_grace": text}}) == []


def test_schema_defaults_are_written_as_the_loader_reads_them() -> None:
    """Every duration default in the schema parses back to the model's default (``90s``, never ISO)."""
    schema = json_schema()
    found = 0
    for model in [*JOB_MODELS.values(), *SECTIONS.values()]:
        props = schema["$defs"][model.__name__]["properties"]
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, timedelta):
                assert parse_duration(props[name]["default"]) == default, (model.__name__, name)
                found += 1
    assert schema["$defs"]["HttpSettings"]["properties"]["stale_after"]["default"] == "90s"
    assert found >= 10


# --- descriptions: one source -----------------------------------------------------------------------
def models() -> list[type[BaseModel]]:
    """Every model reachable from the job kinds and sections."""
    seen: dict[str, type[BaseModel]] = {}

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in seen:
                return
            seen[tp.__name__] = tp
            for field in tp.model_fields.values():
                walk(field.annotation)
        for arg in getattr(tp, "__args__", ()) or ():
            walk(arg)
        for meta in getattr(tp, "__metadata__", ()) or ():
            walk(meta)

    for model in [*JOB_MODELS.values(), *SECTIONS.values()]:
        walk(model)
    return list(seen.values())


def test_every_field_has_a_description_and_the_schema_shows_it() -> None:
    schema = json_schema()
    all_models = models()
    assert len(all_models) >= 30
    for model in all_models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no Field(description=...)"
        props = schema["$defs"][model.__name__]["properties"]
        for name, field in model.model_fields.items():
            assert props[field.alias or name]["description"] == field.description


def test_defaults_is_an_object_of_the_keys_jobs_accept() -> None:
    defaults = json_schema()["$defs"]["Defaults"]
    assert defaults["type"] == "object" and defaults["additionalProperties"] is False
    job_keys = {name for model in JOB_MODELS.values() for name in model.model_fields} - {"kind"}
    assert job_keys <= set(defaults["properties"])


# --- the configuration reference states the limits the models enforce ----------------------------
def limits_table() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8").split("**Limits.**", 1)[1]
    rows = [line for line in text.split("\n\n", 2)[1].splitlines() if line.startswith("|")][2:]
    return [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]  # type: ignore[misc]


def _bound(value: Any) -> str:
    return f"`{int(value)}`" if float(value).is_integer() else f"`{value}`"


def test_readme_limits_table_states_every_bound_of_the_models() -> None:
    import annotated_types as at

    from scheduler.config.jobs import MIN_EVERY
    from scheduler.config.types import format_duration

    rows = limits_table()
    checked = 0
    for model in models():
        for name, field in model.model_fields.items():
            bounds = [_bound(getattr(m, attr)) for m in field.metadata
                      for kind, attr in ((at.Ge, "ge"), (at.Le, "le"), (at.Gt, "gt"), (at.Lt, "lt"),
                                         (at.MinLen, "min_length")) if isinstance(m, kind)]
            if not bounds:
                continue
            key = re.compile(rf"`(?:[\w.]+\.)?{re.escape(field.alias or name)}`")
            assert any(key.search(k) and all(b in limit for b in bounds) for k, limit in rows), \
                f"README limits table lacks {model.__name__}.{name} {bounds}"
            checked += 1
    assert checked >= 15
    assert ("`every`", f"at least `{format_duration(MIN_EVERY)}`") in rows
