"""``scheduler status`` over a real state store, plus the pure pieces behind alerts and backfill."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ops_helpers import run_cli

from scheduler.ops.alerts import previous_failures, redact_all, slack_body
from scheduler.ops.backfill import plan_dates
from scheduler.schedule import Schedule
from scheduler.state import StateStore


def test_status_json_and_table(workdir: Path) -> None:
    flag = workdir / "broken"
    (workdir / "scheduler.yaml").write_text(f"""
jobs:
  nightly:
    kind: command
    schedule: "30 4 * * *"
    timezone: Europe/Berlin
    shell: 'test ! -e {flag}'
    expect_success_within: 26h
  idle: {{kind: command, every: 1h, shell: "true", enabled: false}}
  downstream: {{kind: command, after: nightly, shell: "true"}}
""")
    assert run_cli(workdir, "run-job", "nightly", "--date", "2024-05-01").returncode == 0
    flag.touch()
    for day in ("2024-05-02", "2024-05-03"):
        assert run_cli(workdir, "run-job", "nightly", "--date", day).returncode == 1

    result = run_cli(workdir, "status", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["job"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["nightly", "idle", "downstream"]
    nightly = rows["nightly"]
    assert nightly["failure_streak"] == 2
    assert nightly["last_run"]["status"] == "failed" and nightly["last_run"]["logical_date"] == "2024-05-03"
    assert nightly["last_run"]["error"] == "exited with code 1" and nightly["last_run"]["duration"] is not None
    assert nightly["last_success"] is not None and nightly["overdue"] is False
    assert nightly["expect_success_within"] == "1d2h" or nightly["expect_success_within"] == "26h"
    (fire,) = nightly["next"]
    assert datetime.fromisoformat(fire).strftime("%H:%M") == "04:30"  # shown in the job's timezone
    assert rows["idle"]["enabled"] is False and rows["idle"]["next"] == [] and rows["idle"]["last_run"] is None
    assert rows["downstream"]["after"] == ["nightly"] and rows["downstream"]["failure_streak"] == 0

    table = run_cli(workdir, "status")
    assert table.returncode == 0
    for text in ("nightly", "failed", "idle (disabled)", "never run", "after nightly"):
        assert text in table.stdout


def test_previous_failures_reads_the_store_history(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ids = []
    for i, status in enumerate(["success", "failed", "interrupted", "timeout", "success"]):
        run_id = store.start_run("j", base + timedelta(days=i), date(2024, 1, 1) + timedelta(days=i), "schedule")
        store.finish_run(run_id, status)
        ids.append(run_id)
    assert previous_failures(store, "j", ids[-1]) == 2  # the interrupted run is passed over
    assert previous_failures(store, "j", None) == 0  # the newest decisive run succeeded
    store.close()


def test_plan_dates_modes(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "state.db")
    schedule = Schedule(cron="0 2 * * *")
    day = date(2024, 3, 1)
    for offset, status in ((0, "success"), (1, "failed"), (2, "abandoned")):
        d = day + timedelta(days=offset)
        store.finish_run(store.start_run("j", schedule.slot_for_date(d), d, "backfill"), status)
    last = day + timedelta(days=3)  # never run

    def chosen(rerun: str | None) -> list[int]:
        return [p.day.day for p in plan_dates(store, "j", schedule, day, last, rerun) if p.run]

    assert chosen(None) == [2, 3, 4]
    assert chosen("failed") == [2, 3]
    assert chosen("all") == [1, 2, 3, 4]
    store.close()


def test_alert_bodies() -> None:
    payload = {"job": "j", "text": "job j failed: token=abc", "last_lines": ["a", "b"], "n": 3}
    assert slack_body(payload) == {"text": "job j failed: token=abc\n```\na\nb\n```"}
    assert redact_all(payload, lambda s: s.replace("abc", "***"))["text"] == "job j failed: token=***"
