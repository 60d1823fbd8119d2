"""Valid configs: interpolation, secrets from files, defaults, directory loading and the JSON Schema."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scheduler.cli import main
from scheduler.config import load_config
from scheduler.config.compiled import CompiledJob
from scheduler.config.loader import load_models
from scheduler.kinds.container.spec import ContainerJob
from scheduler.kinds.ingest.spec import IngestJob

GOOD = Path(__file__).parent / "good"
REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def command_job(config: Any, name: str) -> CompiledJob:
    job = config.jobs[name]
    assert isinstance(job, CompiledJob) and job.kind == "command"
    return job


# --- ${VAR} interpolation -------------------------------------------------------------------------
def test_interpolation_uses_the_environment_then_the_default(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", """\
        jobs:
          dump:
            kind: command
            shell: "pg_dump ${DB_NAME} --host ${DB_HOST:-localhost} --port ${DB_PORT:-5432}"
            timezone: ${JOB_TZ:-UTC}
            env:
              TARGET: ${TARGET:-/backups}
              EMPTY: "${NOTHING:-}"
              MIXED: "pre-${DB_NAME}-post"
        """)
    config = load_config(path, env={"DB_NAME": "sales", "DB_PORT": "6543", "JOB_TZ": "Europe/Berlin"})
    job = command_job(config, "dump")
    assert job.shell == "pg_dump sales --host localhost --port 6543"
    assert job.timezone == "Europe/Berlin"
    assert job.env == {"TARGET": "/backups", "EMPTY": "", "MIXED": "pre-sales-post"}


def test_interpolated_durations_and_numbers_are_validated_after_expansion(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", """\
        jobs:
          dump:
            kind: command
            shell: echo
            timeout: ${DUMP_TIMEOUT:-15m}
            every: ${DUMP_EVERY}
        """)
    job = command_job(load_config(path, env={"DUMP_EVERY": "1h"}), "dump")
    assert job.timeout is not None and job.timeout.total_seconds() == 900
    assert job.every is not None and job.every.total_seconds() == 3600


def test_double_dollar_is_a_literal_dollar_and_bare_dollar_is_left_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", """\
        jobs:
          price:
            kind: command
            shell: "echo $$5 $${NOT_A_VAR} $HOME ${SET}"
        """)
    job = command_job(load_config(path, env={"SET": "yes"}), "price")
    assert job.shell == "echo $5 ${NOT_A_VAR} $HOME yes"


# --- secrets --------------------------------------------------------------------------------------
def test_token_file_reads_the_secret_into_token_and_marks_it_secret(tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "api-token", "tok-123456789\n")
    write(tmp_path / "secrets" / "db", "hunter2-db-password\n")
    path = write(tmp_path / "conf" / "jobs.yaml", """\
        jobs:
          orders:
            kind: ingest
            source:
              base_url: https://api.example.com
              auth:
                type: bearer
                token_file: ../secrets/api-token
            sink:
              dataset: orders
              schema: {id: int}
          backup:
            kind: command
            shell: echo
            env:
              DB_PASSWORD_file: %s
        """ % (tmp_path / "secrets" / "db"))
    config = load_config(path, env={})
    orders = load_models(path, env={}).jobs["orders"]
    assert isinstance(orders, IngestJob)
    assert orders.source.auth is not None
    assert orders.source.auth.token == "tok-123456789"  # type: ignore[union-attr]
    assert command_job(config, "backup").env == {"DB_PASSWORD": "hunter2-db-password"}
    assert {"tok-123456789", "hunter2-db-password"} <= config.secrets


def test_secret_named_values_from_variables_are_secrets_but_short_ones_are_not(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", """\
        jobs:
          call:
            kind: command
            shell: echo
            env:
              API_KEY: ${API_KEY}
              PASSWORD: abc
              REGION: eu-west-1
        http:
          api_token: ${OPS_TOKEN}
        """)
    config = load_config(path, env={"API_KEY": "k-9876543210", "OPS_TOKEN": "ops-token-value"})
    assert {"k-9876543210", "ops-token-value"} <= config.secrets
    assert "abc" not in config.secrets  # too short to redact safely
    assert "eu-west-1" not in config.secrets


def test_key_and_key_file_together_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "tok", "from-file-token")
    path = write(tmp_path / "jobs.yaml", """\
        http:
          api_token: inline-token
          api_token_file: tok
        """)
    assert main(["validate", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3: http.api_token: both 'api_token' and 'api_token_file' given"]


# --- defaults -------------------------------------------------------------------------------------
def test_defaults_are_merged_and_the_job_wins(tmp_path: Path) -> None:
    path = write(tmp_path / "jobs.yaml", """\
        defaults:
          kind: command
          timezone: Europe/Berlin
          retries: 2
          pull: always
          env: {A: from-defaults, B: from-defaults}
          params: {region: eu, size: 10}
        jobs:
          plain:
            shell: echo
          own:
            shell: echo
            retries: 5
            timezone: UTC
            env: {B: from-job, C: from-job}
            params: {size: 20}
          image:
            kind: container
            image: busybox
        """)
    config = load_config(path, env={})
    plain, own = command_job(config, "plain"), command_job(config, "own")
    assert (plain.timezone, plain.retries, plain.env) == (
        "Europe/Berlin", 2, {"A": "from-defaults", "B": "from-defaults"})
    assert (own.timezone, own.retries) == ("UTC", 5)
    assert own.env == {"A": "from-defaults", "B": "from-job", "C": "from-job"}
    assert own.params == {"region": "eu", "size": 20}
    image = load_models(path, env={}).jobs["image"]
    assert isinstance(image, ContainerJob)
    assert image.pull == "always"  # a default for one kind's field is applied where it exists
    assert image.retries == 2
    assert config.schedules["plain"].tz.key == "Europe/Berlin"


# --- directories ----------------------------------------------------------------------------------
def test_directory_loads_yaml_files_sorted_and_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    conf = Path("conf.d")
    write(conf / "20-jobs.yml", """\
        jobs:
          load:
            kind: command
            shell: echo load
            after: [extract]
        """)
    write(conf / "10-base.yaml", """\
        defaults:
          timezone: America/New_York
        daemon:
          log_level: debug
        jobs:
          extract:
            kind: command
            shell: echo extract
            schedule: "0 1 * * *"
        """)
    write(conf / "README.md", "not a config")
    write(conf / "notes.txt", "jobs: [this is not read]")
    write(conf / "sub" / "ignored.yaml", "jobs: {broken")
    config = load_config(conf, env={})
    assert config.sources == ("conf.d/10-base.yaml", "conf.d/20-jobs.yml")
    assert list(config.jobs) == ["extract", "load"]
    assert config.jobs["load"].timezone == "America/New_York"  # defaults from another file
    assert config.jobs["load"].after == ("extract",)
    assert config.daemon.log_level == "debug"


def test_digest_follows_content(tmp_path: Path) -> None:
    body = "jobs:\n  a:\n    kind: command\n    shell: echo\n"
    first = load_config(write(tmp_path / "one" / "jobs.yaml", body), env={})
    same = load_config(write(tmp_path / "two" / "jobs.yaml", body), env={})
    other = load_config(write(tmp_path / "three" / "jobs.yaml", body.replace("echo", "ls")), env={})
    assert first.digest == same.digest != other.digest


def test_validate_prints_a_summary_for_a_good_config(capsys: pytest.CaptureFixture[str]) -> None:
    path = GOOD / "all-kinds.yaml"
    assert main(["validate", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("config OK: 5 job(s) from ")


def test_loaded_config_is_frozen() -> None:
    config = load_config(GOOD / "all-kinds.yaml", env={})
    job = command_job(config, "backup")
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.retries = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.jobs["new"] = job  # type: ignore[index]


# --- JSON Schema ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """What ``scheduler schema`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return json.loads(out.getvalue())


def test_schema_is_a_json_schema_with_every_kind(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"defaults", "jobs", "daemon", "state", "http", "docker"}
    variants = schema["properties"]["jobs"]["additionalProperties"]["oneOf"]
    names = {v["$ref"].rsplit("/", 1)[-1] for v in variants}
    assert names == {"CommandJob", "PythonJob", "IngestJob", "ContainerJob"}
    for name in names:
        assert name in schema["$defs"]
    for ref in json.dumps(schema).split('"$ref": "')[1:]:
        target = ref.split('"', 1)[0]
        assert target.startswith("#/$defs/") and target.removeprefix("#/$defs/") in schema["$defs"], target
    jsonschema.Draft202012Validator.check_schema(schema)


def _schema_errors(schema: dict[str, Any], data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


def _config_files_to_check() -> list[Path]:
    files = sorted(GOOD.glob("*.yaml"))
    repo_jobs = REPO / "config" / "jobs.yaml"
    return files + ([repo_jobs] if repo_jobs.is_file() else [])


@pytest.mark.parametrize("path", _config_files_to_check(), ids=lambda p: str(p.relative_to(REPO)))
def test_schema_accepts_valid_config_files(schema: dict[str, Any], path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # Variables the file needs but the environment lacks get a URL, the one shape they take in these files.
    env = {**os.environ, **{name: "http://127.0.0.1:8080" for name in re.findall(r"\$\{(\w+)\}", text)
                            if name not in os.environ}}
    load_config(path, env=env)  # the loader accepts it ...
    assert _schema_errors(schema, yaml.safe_load(text)) == []  # ... so must the schema


# Each row is a job the loader accepts, written in a form the docs and docstrings promise.
ACCEPTED_FORMS = {
    "duration-with-unit": {"kind": "command", "shell": "echo", "timeout": "10m"},
    "after-as-list": {"kind": "command", "shell": "echo", "after": ["other"]},
    "duration-as-bare-number": {"kind": "command", "shell": "echo", "every": 90},
    "after-as-one-string": {"kind": "command", "shell": "echo", "after": "other"},
    "env-number-value": {"kind": "command", "shell": "echo", "env": {"WORKERS": 4}},
    "container-command-string": {"kind": "container", "image": "busybox", "command": "echo hi"},
    "container-size-with-unit": {"kind": "container", "image": "busybox", "memory": "512m"},
    "container-volume-string": {"kind": "container", "image": "busybox", "volumes": ["/data/in:/in:ro"]},
    "ingest-cast-short-form": {"kind": "ingest", "source": {"base_url": "https://e.com"},
                               "transform": [{"cast": {"amount": "float"}}],
                               "sink": {"dataset": "d", "schema": {"amount": "float"}}},
}


@pytest.mark.parametrize("name", list(ACCEPTED_FORMS))
def test_schema_accepts_every_form_the_loader_accepts(schema: dict[str, Any], name: str, tmp_path: Path) -> None:
    data = {"jobs": {"j": ACCEPTED_FORMS[name], "other": {"kind": "command", "shell": "true"}},
            "docker": {"allowed_host_paths": ["/data"]}}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    load_config(path, env={})
    assert _schema_errors(schema, data) == []


@pytest.mark.parametrize("data", [
    {"jobz": {}},
    {"jobs": {"x": {"kind": "command", "shell": "echo", "schedul": "0 * * * *"}}},
    {"jobs": {"x": {"kind": "nope"}}},
    {"daemon": {"log_level": "loud"}},
], ids=["top-level-typo", "job-key-typo", "unknown-kind", "bad-literal"])
def test_schema_rejects_what_the_loader_rejects(schema: dict[str, Any], data: dict[str, Any]) -> None:
    assert _schema_errors(schema, data) != []
