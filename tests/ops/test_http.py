"""The operations endpoint of a real daemon: health, metrics and the token-protected job API."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from ops_helpers import http
from polling import wait_for

TOKEN = "ops-test-token-7f3a9c2e"


def _metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus exposition text (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if got == want:
            return float(match.group(3))
    return None


def test_health_turns_503_while_the_loop_is_stuck_and_recovers(start_daemon, workdir: Path) -> None:
    daemon = start_daemon("""
http: {listen: "127.0.0.1:0", stale_after: 1s}
daemon: {shutdown_grace: 2s}
jobs:
  tick: {kind: command, every: 1s, command: ["true"]}
""")
    url = daemon.url
    wait_for(lambda: http("GET", url + "/healthz")[0] == 200, what="healthy daemon", retry_errors=True)
    # A writer holding the database lock is a real way for the loop to hang: its next step
    # blocks on recording the fired slot (SQLite's busy timeout) until the lock goes away.
    db = sqlite3.connect(str(workdir / "data" / ".scheduler" / "state.db"), timeout=5, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        def stalled() -> dict | None:
            status, body = http("GET", url + "/healthz")
            payload = json.loads(body)
            return payload if status == 503 and any("loop stalled" in r for r in payload["reasons"]) else None

        unhealthy = wait_for(stalled, 15, "503 naming the stalled loop", retry_errors=True)
        assert unhealthy["status"] == "unhealthy"
    finally:
        db.execute("ROLLBACK")
        db.close()
    wait_for(lambda: http("GET", url + "/healthz")[0] == 200, 15, "health back to 200", retry_errors=True)
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_metrics_move_after_runs(start_daemon, workdir: Path) -> None:
    (workdir / "rowjob.py").write_text("def emit(ctx):\n    return {'rows_written': 5, 'rows_rejected': 2}\n")
    daemon = start_daemon("""
http: {listen: "127.0.0.1:0"}
daemon: {shutdown_grace: 2s}
jobs:
  good: {kind: command, every: 1s, shell: "echo fine"}
  broken: {kind: command, every: 1s, shell: "echo nope; exit 3", retries: 1, retry_delay: 0s}
  rows: {kind: python, every: 1s, function: "rowjob:emit"}
""")
    url = daemon.url
    digest = daemon.wait_event("scheduler started")["config_digest"]

    def scraped() -> str | None:
        status, body = http("GET", url + "/metrics")
        text = body.decode()
        ready = (status == 200
                 and (_metric(text, "scheduler_runs_total", job="good", status="success") or 0) >= 2
                 and (_metric(text, "scheduler_runs_total", job="broken", status="failed") or 0) >= 1
                 and (_metric(text, "scheduler_rows_written_total", job="rows") or 0) >= 5)
        return text if ready else None

    text = wait_for(scraped, 30, "runs counted in /metrics", retry_errors=True)
    assert (_metric(text, "scheduler_run_duration_seconds_count", job="good") or 0) >= 2
    assert (_metric(text, "scheduler_last_success_timestamp_seconds", job="good") or 0) > 0
    assert _metric(text, "scheduler_last_success_timestamp_seconds", job="broken") is None
    assert (_metric(text, "scheduler_retries_total", job="broken") or 0) >= 1
    rows_runs = _metric(text, "scheduler_runs_total", job="rows", status="success") or 0
    assert _metric(text, "scheduler_rows_written_total", job="rows") == 5 * rows_runs
    assert _metric(text, "scheduler_rows_rejected_total", job="rows") == 2 * rows_runs
    assert _metric(text, "scheduler_info", version="0.1.0", config_digest=digest) == 1
    for name in ("scheduler_running_runs", "scheduler_skipped_slots_total", "scheduler_missed_slots_total"):
        assert _metric(text, name, job="good") is not None, name
    assert "exit 3" not in text and "echo" not in text  # labels are job names, never commands
    # without an API token the job API does not exist
    assert http("GET", url + "/jobs")[0] == 404
    assert http("POST", url + "/jobs/good/run")[0] == 404


def test_job_api_needs_the_token(start_daemon, workdir: Path) -> None:
    daemon = start_daemon(f"""
http: {{listen: "127.0.0.1:0", api_token: "{TOKEN}"}}
daemon: {{shutdown_grace: 2s}}
jobs:
  manual: {{kind: command, shell: "echo manual run"}}
  leapday: {{kind: command, schedule: "0 0 29 2 *", shell: "true"}}
""")
    url = daemon.url
    assert http("POST", url + "/jobs/manual/run")[0] == 401
    assert http("POST", url + "/jobs/manual/run", {"Authorization": "Bearer wrong-token"})[0] == 401
    assert http("POST", url + "/jobs/manual/run", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert http("GET", url + "/jobs", {"Authorization": "Bearer " + TOKEN[:-1]})[0] == 401
    assert http("POST", url + "/jobs/nosuchjob/run", {"Authorization": "Bearer wrong"})[0] == 401  # no enumeration
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http("POST", url + "/jobs/nosuchjob/run", auth)[0] == 404

    status, body = http("POST", url + "/jobs/manual/run", auth)
    assert status == 202, body
    assert json.loads(body)["trigger"] == "api"

    def finished_run() -> dict | None:
        status, body = http("GET", url + "/jobs", auth)
        jobs = {j["job"]: j for j in json.loads(body)["jobs"]}
        last = jobs["manual"]["last_run"]
        return jobs if status == 200 and last and last["status"] == "success" else None

    jobs = wait_for(finished_run, 20, "the API-triggered run to succeed", retry_errors=True)
    assert jobs["manual"]["last_run"]["trigger"] == "api"
    assert jobs["manual"]["next"] == []
    # a schedule that cannot fire while the test runs (an hourly one did, when it crossed the hour)
    assert len(jobs["leapday"]["next"]) == 3 and jobs["leapday"]["last_run"] is None
    daemon.stop()
    assert TOKEN not in daemon.output
    assert any(e.get("event") == "api request refused" for e in daemon.events())


def test_missed_and_skipped_slot_metrics(start_daemon, workdir: Path) -> None:
    from datetime import timedelta

    from scheduler import clock
    from scheduler.state import StateStore

    # The scheduler was last up 100 one-second slots ago; with catchup: none they are all missed.
    store = StateStore.open(workdir / "data" / ".scheduler" / "state.db")
    now = clock.now().replace(microsecond=0)
    store.set_last_fired("behind", now - timedelta(seconds=100))
    store.close()
    daemon = start_daemon("""
http: {listen: "127.0.0.1:0"}
daemon: {shutdown_grace: 1s}
jobs:
  behind: {kind: command, every: 1s, catchup: none, command: ["true"]}
  slow: {kind: command, every: 1s, concurrency: forbid, command: ["sleep", "3"]}
""")
    url = daemon.url

    def counted() -> str | None:
        text = http("GET", url + "/metrics")[1].decode()
        ok = ((_metric(text, "scheduler_missed_slots_total", job="behind") or 0) >= 95
              and (_metric(text, "scheduler_skipped_slots_total", job="slow") or 0) >= 1
              and (_metric(text, "scheduler_running_runs", job="slow") or 0) == 1)
        return text if ok else None

    text = wait_for(counted, 20, "missed and skipped slots in /metrics", retry_errors=True)
    # never more than the slots that elapsed since the persisted cursor
    elapsed = (clock.now() - now).total_seconds()
    assert (_metric(text, "scheduler_missed_slots_total", job="behind") or 0) <= elapsed + 100
    assert (_metric(text, "scheduler_missed_slots_total", job="slow") or 0) == 0
