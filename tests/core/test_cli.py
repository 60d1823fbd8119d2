"""The command line as users call it: exit codes, --date backfills, params, list/history/schema."""

from __future__ import annotations

import json
import subprocess

import pytest
from programs import venv_program

from scheduler.cli import main


def run(cmd, *args, env, cwd=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def cfg(write_config, tmp_path):
    return write_config(f"""
        jobs:
          daily:
            kind: command
            schedule: "15 2 * * *"
            timezone: Europe/Berlin
            shell: 'echo "date=$SCHEDULER_LOGICAL_DATE params=$SCHEDULER_PARAMS" > {tmp_path}/out.txt'
          fails:
            kind: command
            command: [sh, -c, "exit 7"]
          manual:
            kind: command
            command: ["true"]
            enabled: false
    """)


def test_run_job_with_date_and_params_then_history(cfg, tmp_path, scheduler_cmd, scheduler_env):
    data = tmp_path / "data"
    proc = run(scheduler_cmd, "run-job", "daily", "--date", "2026-11-05", "--param", "limit=10",
               "--param", "mode=full", "--config", str(cfg), "--data-dir", str(data), env=scheduler_env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.txt").read_text().strip() == 'date=2026-11-05 params={"limit": 10, "mode": "full"}'
    hist = run(scheduler_cmd, "history", "daily", "--json", "--config", str(cfg), "--data-dir", str(data),
               env=scheduler_env)
    records = json.loads(hist.stdout)
    assert [(r["job"], r["logical_date"], r["status"], r["trigger"]) for r in records] == [
        ("daily", "2026-11-05", "success", "manual")]
    # The same date again updates the same record (idempotent rerun).
    run(scheduler_cmd, "run-job", "daily", "--date", "2026-11-05", "--config", str(cfg), "--data-dir", str(data),
        env=scheduler_env)
    hist = run(scheduler_cmd, "history", "--json", "--config", str(cfg), "--data-dir", str(data), env=scheduler_env)
    assert len(json.loads(hist.stdout)) == 1


def test_run_job_console_script_exit_code_is_the_runs(cfg, tmp_path, scheduler_env):
    proc = subprocess.run([venv_program("run-job"), "fails", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, env=scheduler_env, timeout=60)
    assert proc.returncode == 1
    assert "exited with code 7" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["run-job", "nope"], "error: unknown job 'nope' (known: daily, fails, manual)"),
    (["run-job", "daily", "--date", "05/11/2026"], "error: --date: expected YYYY-MM-DD, got '05/11/2026'"),
    (["run-job", "daily", "--param", "novalue"], "error: --param: expected KEY=VALUE, got 'novalue'"),
    (["history", "nope"], "error: unknown job 'nope'"),
])
def test_usage_errors_exit_2_with_one_line(cfg, tmp_path, capsys, args, message):
    assert main([*args, "--config", str(cfg), "--data-dir", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.strip() == message


def test_list_json_shows_next_three_fire_times(cfg, capsys):
    assert main(["list", "--json", "--config", str(cfg)]) == 0
    rows = {r["job"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["daily"]["schedule"] == "15 2 * * *" and rows["daily"]["timezone"] == "Europe/Berlin"
    assert len(rows["daily"]["next"]) == 3 and all("T02:15:00+0" in t for t in rows["daily"]["next"])
    assert rows["fails"]["next"] == [] and rows["manual"]["enabled"] is False


def test_list_table_and_validate(cfg, capsys):
    assert main(["validate", "--config", str(cfg)]) == 0
    assert "config OK: 3 job(s)" in capsys.readouterr().out
    assert main(["list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "daily" in out and "Europe/Berlin" in out


def test_config_and_data_dir_from_environment(cfg, tmp_path, scheduler_cmd, scheduler_env):
    env = {**scheduler_env, "SCHEDULER_CONFIG": str(cfg), "SCHEDULER_DATA_DIR": str(tmp_path / "envdata")}
    assert run(scheduler_cmd, "run-job", "daily", env=env).returncode == 0
    assert (tmp_path / "envdata" / ".scheduler" / "state.db").exists()


def test_schema_is_json_schema_with_every_kind(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["jobs"]["additionalProperties"]["oneOf"]
    kinds = {schema["$defs"][ref["$ref"].split("/")[-1]]["properties"]["kind"]["const"]
             for ref in schema["properties"]["jobs"]["additionalProperties"]["oneOf"]}
    assert kinds == {"command", "python", "ingest", "container"}


def test_bad_config_exit_2_without_traceback(write_config, tmp_path, scheduler_cmd, scheduler_env):
    bad = write_config("jobs:\n  x:\n    kind: command\n    schedul: '* * * * *'\n    command: [x]\n")
    for sub in ("validate", "run", "list", "run-job x"):
        proc = run(scheduler_cmd, *sub.split(), "--config", str(bad), "--data-dir", str(tmp_path / "d"),
                   env=scheduler_env)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().endswith("jobs.yaml:4: job 'x': schedul: unknown key 'schedul' "
                                            "(did you mean 'schedule'?)")


def test_python_dash_m_and_version(scheduler_cmd, scheduler_env):
    proc = run(scheduler_cmd, "--version", env=scheduler_env)
    assert proc.returncode == 0 and proc.stdout.startswith("scheduler ")


def test_interval_schedules_show_as_written(write_config, tmp_path, scheduler_cmd, scheduler_env):
    from scheduler.app.context import load_config
    from scheduler.ops.status import job_summaries
    from scheduler.state import StateStore

    cfg = write_config("""
        jobs:
          often: {kind: command, command: ["true"], every: 10s}
          hourly: {kind: command, command: ["true"], every: 90m}
          nightly: {kind: command, command: ["true"], schedule: "15 2 * * *"}
    """)
    proc = run(scheduler_cmd, "list", "--json", "--config", str(cfg), env=scheduler_env)
    assert proc.returncode == 0, proc.stderr
    shown = {r["job"]: r["schedule"] for r in json.loads(proc.stdout)}
    assert shown == {"often": "every 10s", "hourly": "every 90m", "nightly": "15 2 * * *"}
    store = StateStore.open(tmp_path / "state.db")  # what /jobs serves
    try:
        served = {r["job"]: r["schedule"] for r in job_summaries(load_config(cfg), store)}
    finally:
        store.close()
    assert served == shown


@pytest.mark.parametrize("argv", [
    ["run-job", "daily"],
    ["run-job", "daily", "--date", "2026-11-05", "--param", "a=1", "--param", "b=x", "--force"],
    ["--config", "c.yaml", "run-job", "daily", "--data-dir", "d", "--log-level", "warning"],
    ["--config=c.yaml", "--log-format", "json", "run-job", "daily"],
    ["--data-dir", "run-job", "list", "--json"],  # a value that looks like a subcommand
    ["run"], ["validate", "--config", "c.yaml"], ["history", "daily", "--limit", "3", "--json"],
    ["schema"], ["demo", "--records", "10", "--date", "2026-11-05"], ["health", "--max-age", "5"],
])
def test_a_core_subcommand_parses_alone_as_in_the_full_parser(argv):
    """``main`` builds only the named core subcommand's parser: it must read argv as the full one does."""
    from scheduler.cli import build_parser, core_command

    assert core_command(argv) is not None
    assert build_parser(only=core_command(argv)).parse_args(argv) == build_parser().parse_args(argv)


@pytest.mark.parametrize("argv", [
    [], ["-h"], ["--version"], ["--conf", "c.yaml", "run-job", "x"], ["status"], ["backfill", "x"],
    ["logs", "1"], ["nonsense"], ["--config"],
])
def test_help_version_abbreviations_and_other_subcommands_use_the_full_parser(argv):
    from scheduler.cli import core_command

    assert core_command(argv) is None


def test_a_usage_error_reads_the_same_from_the_core_parser(capsys):
    """The subcommand's own errors and usage come out as the full parser prints them."""
    from scheduler.cli import build_parser

    texts = []
    for parser in (build_parser(only="run-job"), build_parser()):
        with pytest.raises(SystemExit) as caught:
            parser.parse_args(["run-job", "--date"])
        assert caught.value.code == 2
        texts.append(capsys.readouterr().err)
    assert texts[0] == texts[1] and "usage: scheduler run-job" in texts[0]
