"""The ``state:`` section: backends, URL checks, the password as a secret shown nowhere."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler.config import load_config
from scheduler.config.compiled import load_compiled
from scheduler.errors import ConfigError, StateError
from scheduler.logs import configure, get_logger
from scheduler.stores import mask_url, open_store, url_secrets

JOB = """
jobs:
  hello: {kind: command, schedule: "0 3 * * *", command: ["true"]}
"""


def test_url_secrets_and_masking() -> None:
    url = "postgresql://sched:p%40ss-word@db.internal:5432/scheduler"
    assert url_secrets(url) == {"p%40ss-word", "p@ss-word"}
    assert mask_url(url) == "postgresql://sched:***@db.internal:5432/scheduler"
    assert url_secrets("postgresql://sched@db/scheduler") == set()
    assert mask_url("postgresql://sched@db/scheduler") == "postgresql://sched@db/scheduler"


def test_sqlite_stays_the_default(write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = load_config(write_config(JOB), env={})
    assert (config.state.backend, config.state.path, config.state.url) == ("sqlite", None, None)
    store = open_store(config.state, tmp_path / "data")
    try:
        assert store.ping() and (tmp_path / "data" / ".scheduler" / "state.db").exists()
    finally:
        store.close()


def test_a_postgres_url_is_read_and_its_password_is_a_secret(write_config: Callable[..., Path]) -> None:
    state = 'state: {backend: postgres, url: "postgres://sched:Tr0ub4dor-3@db:5432/scheduler"}\n'
    config = load_config(write_config(state + JOB), env={})
    assert (config.state.backend, config.state.url) == ("postgres", "postgres://sched:Tr0ub4dor-3@db:5432/scheduler")
    assert "Tr0ub4dor-3" in config.secrets


def test_url_file_holds_the_whole_url(write_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text("postgresql://sched:from-a-file-42@db/scheduler\n")
    path = write_config("state:\n  backend: postgres\n  url_file: db-url\n" + JOB)
    config = load_config(path, env={})
    assert config.state.url == "postgresql://sched:from-a-file-42@db/scheduler"
    assert {"from-a-file-42", config.state.url} <= config.secrets
    compiled = load_compiled(path)  # what the daemon holds, validated in a child process
    assert compiled.state.url == config.state.url and compiled.secrets == config.secrets


@pytest.mark.parametrize(("state", "field", "message"), [
    ("{backend: postgres}", "state", "backend postgres needs 'url' (or 'url_file')"),
    ('{backend: postgres, url: "mysql://u:hunter2-pw@db/x"}', "state.url",
     "must be a postgresql:// or postgres:// URL"),
    ('{backend: postgres, url: "postgresql://db/x", path: /x.db}', "state", "'path' is only for backend sqlite"),
    ('{url: "postgresql://u:hunter2-pw@db/x"}', "state", "'url' is only for backend postgres"),
    ("{backend: mysql}", "state.backend", "must be one of 'sqlite' or 'postgres'"),
])
def test_bad_state_sections_name_file_line_and_field(write_config: Callable[..., Path], state: str, field: str,
                                                      message: str) -> None:
    path = write_config(JOB + f"state: {state}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.field) == (str(path), 4, field)
    assert message in issue.message
    assert "hunter2" not in str(caught.value)


def test_opening_sqlite_never_imports_psycopg(tmp_path: Path, scheduler_env: dict[str, str]) -> None:
    code = ("import sys\nfrom pathlib import Path\nfrom scheduler.stores import open_store\n"
            f"open_store(None, Path({str(tmp_path)!r})).close()\n"
            "import scheduler.daemon, scheduler.cli\n"
            "print('psycopg' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=scheduler_env, check=True)
    assert out.stdout.strip() == "False"


def test_the_password_is_masked_in_logs(write_config: Callable[..., Path]) -> None:
    config = load_config(write_config('state: {backend: postgres, url: "postgresql://s:pw-9f8e7d@db/x"}\n' + JOB),
                         env={})
    stream = io.StringIO()
    configure("info", "json", config.secrets, stream=stream)
    get_logger().error("store failed", url=config.state.url, error=RuntimeError("auth for pw-9f8e7d failed"))
    text = stream.getvalue()
    assert "pw-9f8e7d" not in text and "***" in text


# --- against a real server ------------------------------------------------------------------------
def _config(write_config: Callable[..., Path], url: str) -> Path:
    return write_config(f'state: {{backend: postgres, url: "{url}"}}\n' + JOB)


def _cli(cmd: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.postgres
def test_a_wrong_password_fails_with_the_password_masked(pg_cluster: Any, pg_url: str, tmp_path: Path,
                                                         write_config: Callable[..., Path], scheduler_cmd: list[str],
                                                         scheduler_env: dict[str, str]) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    url = pg_url.replace(pg_cluster.password, wrong)
    with pytest.raises(StateError) as caught:
        open_store(load_config(_config(write_config, url), env={}).state, tmp_path)
    assert wrong not in str(caught.value) and "sched:***@127.0.0.1" in str(caught.value)
    assert "password authentication failed" in str(caught.value)

    config = _config(write_config, url)
    data = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    for args in (["history", *data], ["run-job", "hello", *data], ["validate", *data], ["list", "--json", *data]):
        proc = _cli(scheduler_cmd, scheduler_env, *args)
        assert wrong not in proc.stdout + proc.stderr, args
    failed = _cli(scheduler_cmd, scheduler_env, "history", *data)
    assert failed.returncode == 1 and "password authentication failed" in failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


@pytest.mark.postgres
def test_run_job_records_its_run_in_postgres(pg_cluster: Any, pg_url: str, tmp_path: Path,
                                             write_config: Callable[..., Path], scheduler_cmd: list[str],
                                             scheduler_env: dict[str, str]) -> None:
    config = _config(write_config, pg_url)
    data = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    ran = _cli(scheduler_cmd, scheduler_env, "run-job", "hello", "--date", "2026-03-01", *data)
    assert ran.returncode == 0, ran.stderr
    assert pg_cluster.password not in ran.stdout + ran.stderr
    history = _cli(scheduler_cmd, scheduler_env, "history", "--json", *data)
    [record] = json.loads(history.stdout)
    assert (record["job"], record["status"], record["logical_date"]) == ("hello", "success", "2026-03-01")
    assert not (tmp_path / "data" / ".scheduler" / "state.db").exists()  # nothing went to SQLite
