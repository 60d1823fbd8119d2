"""Failure, recovery and freshness alerts from a real daemon to a real local webhook."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ops_helpers import Receiver, run_cli
from polling import wait_for

SECRET = "hunter2-webhook-secret"


def _successes(workdir: Path, job: str) -> int:
    db = sqlite3.connect(str(workdir / "data" / ".scheduler" / "state.db"), timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE job = ? AND status = 'success'", (job,)).fetchone()[0]
    finally:
        db.close()


def test_one_failure_alert_then_one_recovery(start_daemon, workdir: Path, receiver: Receiver) -> None:
    marker = workdir / "fail-once"
    marker.touch()
    # fails on its first run only (removing the marker), then succeeds every second
    start_daemon(f"""
daemon: {{shutdown_grace: 2s}}
defaults:
  on_failure: [{{url: "{receiver.url}/failure", timeout: 5s, retries: 2}}]
jobs:
  flaky:
    kind: command
    every: 1s
    env: {{API_PASSWORD: "{SECRET}"}}
    shell: 'if [ -e {marker} ]; then rm {marker}; echo "using $API_PASSWORD"; echo broken >&2; exit 4; fi'
    on_recovery: [{{url: "{receiver.url}/recovery"}}, {{url: "{receiver.url}/slack", format: slack}}]
""")
    wait_for(lambda: receiver.events("recovery"), 30, "a recovery alert", retry_errors=True)
    # a few more successes must not alert again
    before = _successes(workdir, "flaky")
    wait_for(lambda: _successes(workdir, "flaky") >= before + 3, 30, "three more successful runs", retry_errors=True)
    wait_for(lambda: [b for b in receiver.bodies if b["path"] == "/slack"], 10, "the slack-format recovery",
             retry_errors=True)

    failures = receiver.events("failure")
    recoveries = receiver.events("recovery", "/recovery")
    assert len(failures) == 1 and len(recoveries) == 1, receiver.bodies
    failure = failures[0]
    assert failure["job"] == "flaky" and failure["status"] == "failed" and failure["attempt"] == 1
    assert failure["run_id"] and failure["logical_date"] and failure["duration"] is not None
    assert failure["error"] == "exited with code 4"
    assert "broken" in failure["last_lines"]
    assert SECRET not in json.dumps(receiver.bodies)  # redacted by the daemon's redactor
    assert any("***" in line for line in failure["last_lines"])
    recovery = recoveries[0]
    assert recovery["previous_failures"] == 1 and recovery["run_id"] != failure["run_id"]
    slack = [b for b in receiver.bodies if b["path"] == "/slack"]
    assert len(slack) == 1 and set(slack[0]) == {"path", "text"} and "flaky" in slack[0]["text"]


def test_recovery_is_recognised_across_restarts(start_daemon, workdir: Path, receiver: Receiver) -> None:
    # a failure recorded by an earlier process (run-job, an earlier date), then the daemon's
    # first success recovers
    (workdir / "scheduler.yaml").write_text(f"""
jobs:
  nightly:
    kind: command
    schedule: "0 3 * * *"
    shell: 'test ! -e {workdir / "broken"}'
""")
    (workdir / "broken").touch()
    assert run_cli(workdir, "run-job", "nightly", "--date", "2020-01-01").returncode == 1
    (workdir / "broken").unlink()
    daemon = start_daemon(f"""
http: {{listen: "127.0.0.1:0", api_token: "restart-token-123"}}
daemon: {{shutdown_grace: 2s}}
jobs:
  nightly:
    kind: command
    schedule: "0 3 * * *"
    shell: 'test ! -e {workdir / "broken"}'
    on_recovery: [{{url: "{receiver.url}/recovery"}}]
""")
    from ops_helpers import http

    assert http("POST", daemon.url + "/jobs/nightly/run", {"Authorization": "Bearer restart-token-123"})[0] == 202
    recovery = wait_for(lambda: receiver.events("recovery"), 30, "a recovery alert", retry_errors=True)[0]
    assert recovery["job"] == "nightly" and recovery["previous_failures"] == 1


def test_freshness_alerts_once_for_a_job_that_never_ran(start_daemon, workdir: Path, receiver: Receiver) -> None:
    daemon = start_daemon(f"""
http: {{listen: "127.0.0.1:0"}}
daemon: {{shutdown_grace: 2s}}
jobs:
  tick: {{kind: command, every: 1s, command: ["true"]}}
  report:
    kind: command
    schedule: "0 0 1 1 *"
    shell: "true"
    expect_success_within: 1s
    on_failure: [{{url: "{receiver.url}/hook"}}]
""")
    alert = wait_for(lambda: receiver.events("freshness"), 30, "a freshness alert", retry_errors=True)[0]
    assert alert["job"] == "report" and alert["freshness"] is True
    assert alert["last_success"] is None and alert["expect_success_within"] == "1s"
    assert "has not succeeded within 1s" in alert["text"]
    from ops_helpers import http

    def overdue_metric() -> bool:
        body = http("GET", daemon.url + "/metrics")[1].decode()
        return 'scheduler_job_overdue{job="report"} 1.0' in body

    wait_for(overdue_metric, 10, "the overdue gauge", retry_errors=True)
    # the breach stays open: further ticks must not alert again
    before = _successes(workdir, "tick")
    wait_for(lambda: _successes(workdir, "tick") >= before + 3, 30, "three more loop ticks", retry_errors=True)
    assert len(receiver.events("freshness")) == 1
    assert not receiver.events("failure")
