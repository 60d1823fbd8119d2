"""``scheduler backfill`` as a real process: date selection, reruns, exit codes and signals."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from ops_helpers import child_env, run_cli
from polling import wait_for

DATES = [f"2024-03-{d:02d}" for d in range(1, 11)]


def _records(workdir: Path, job: str) -> dict[str, tuple[str, str]]:
    """logical date -> (status, trigger) of the job's runs."""
    db = sqlite3.connect(str(workdir / "data" / ".scheduler" / "state.db"), timeout=10)
    try:
        rows = db.execute("SELECT logical_date, status, trigger FROM runs WHERE job = ?", (job,)).fetchall()
    finally:
        db.close()
    return {day: (status, trigger) for day, status, trigger in rows}


def _ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_backfill_fails_one_date_then_reruns_only_that_one(workdir: Path) -> None:
    log, bad = workdir / "ran.log", workdir / "bad-date"
    (workdir / "scheduler.yaml").write_text(f"""
jobs:
  daily:
    kind: command
    schedule: "0 2 * * *"
    shell: 'echo "$SCHEDULER_LOGICAL_DATE" >> {log}; test "$SCHEDULER_LOGICAL_DATE" != "$(cat {bad} 2>/dev/null)"'
""")
    bad.write_text("2024-03-04")
    first = run_cli(workdir, "backfill", "daily", "--from", DATES[0], "--to", DATES[-1], "--parallel", "3")
    assert first.returncode == 1, first.stdout + first.stderr
    assert sorted(_ran(log)) == DATES
    records = _records(workdir, "daily")
    assert records["2024-03-04"] == ("failed", "backfill")
    assert all(records[d] == ("success", "backfill") for d in DATES if d != "2024-03-04")
    assert "backfill daily 2024-03-04: failed" in first.stdout  # plain progress lines off a terminal
    assert "10 dates: 9 succeeded, 1 failed, 0 skipped" in first.stdout

    bad.unlink()  # fix the condition
    log.unlink()
    rerun = run_cli(workdir, "backfill", "daily", "--from", DATES[0], "--to", DATES[-1], "--rerun", "failed")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _ran(log) == ["2024-03-04"]
    assert _records(workdir, "daily")["2024-03-04"] == ("success", "backfill")
    assert "10 dates: 1 succeeded, 0 failed, 9 skipped" in rerun.stdout

    again = run_cli(workdir, "backfill", "daily", "--from", DATES[0], "--to", DATES[-1])
    assert again.returncode == 0 and _ran(log) == ["2024-03-04"]  # everything already succeeded

    forced = run_cli(workdir, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-02", "--rerun", "all")
    assert forced.returncode == 0 and _ran(log) == ["2024-03-04", "2024-03-01", "2024-03-02"]


def test_rerun_failed_leaves_never_run_dates_alone(workdir: Path) -> None:
    log = workdir / "ran.log"
    (workdir / "scheduler.yaml").write_text(f"""
jobs:
  daily: {{kind: command, schedule: "0 2 * * *", shell: 'echo "$SCHEDULER_LOGICAL_DATE" >> {log}'}}
""")
    result = run_cli(workdir, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-03", "--rerun", "failed")
    assert result.returncode == 0 and _ran(log) == []


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_backfill_cancels_runs_and_resumes(workdir: Path, signum: int, code: int) -> None:
    log, slow = workdir / "ran.log", workdir / "slow"
    (workdir / "scheduler.yaml").write_text(f"""
jobs:
  daily:
    kind: command
    schedule: "0 2 * * *"
    shell: 'echo "$SCHEDULER_LOGICAL_DATE" >> {log};
      if [ "$SCHEDULER_LOGICAL_DATE" = 2024-03-02 ] && [ -e {slow} ]; then sleep 60; fi'
""")
    slow.touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-03",
         "--config", str(workdir / "scheduler.yaml"), "--data-dir", str(workdir / "data")],
        cwd=workdir, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: "2024-03-02" in _ran(log), 30, "the slow date to start", retry_errors=True)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, output
    records = _records(workdir, "daily")
    assert records["2024-03-01"][0] == "success"
    assert records["2024-03-02"][0] == "interrupted"
    assert "2024-03-03" not in records
    assert "3 dates: 1 succeeded, 0 failed, 0 skipped, 1 interrupted, 1 not run" in output

    slow.unlink()
    resumed = run_cli(workdir, "backfill", "daily", "--from", "2024-03-01", "--to", "2024-03-03")
    assert resumed.returncode == 0, resumed.stdout
    assert _ran(log) == ["2024-03-01", "2024-03-02", "2024-03-02", "2024-03-03"]


@pytest.mark.parametrize("args, message", [
    (["--from", "2024-03-05", "--to", "2024-03-01"], "before --from"),
    (["--from", "2024-3-5", "--to", "2024-03-01"], "--from: expected YYYY-MM-DD"),
    (["--from", "2024-03-01", "--to", "2024-03-02", "--parallel", "0"], "--parallel"),
])
def test_backfill_usage_errors_exit_2(workdir: Path, args: list[str], message: str) -> None:
    (workdir / "scheduler.yaml").write_text('jobs:\n  daily: {kind: command, schedule: "0 2 * * *", shell: "true"}\n')
    result = run_cli(workdir, "backfill", "daily", *args)
    assert result.returncode == 2 and message in result.stderr
    unknown = run_cli(workdir, "backfill", "nope", "--from", "2024-03-01", "--to", "2024-03-01")
    assert unknown.returncode == 2 and "unknown job 'nope'" in unknown.stderr
