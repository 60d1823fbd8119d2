"""The operator console against a real daemon process: run output (``logs``), ``pause``/``resume``,
``trigger`` (CLI and HTTP), ``run_on_start``, ``concurrency: queue`` and ``pause_after_failures``.

Every wait polls a condition with a deadline; the only clock the tests wait on is the schedule's own
(an ``every: 1s`` job's slots have to pass to be missed).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from ops_helpers import Receiver, child_env, http, run_cli
from polling import wait_for

from scheduler.state import RunRecord, SQLiteStore

TOKEN = "console-test-token-4b1d"
CANARY = "canary-51f0e2-SECRET"
GRACE = timedelta(seconds=2)  # a slot may fire in the moment before the daemon reads a pause


def runs(workdir: Path, job: str | None = None) -> list[RunRecord]:
    store = SQLiteStore.open(workdir / "data" / ".scheduler" / "state.db")
    try:
        return store.history(job, 10_000)
    finally:
        store.close()


def store_call(workdir: Path, method: str, *args: Any) -> Any:
    store = SQLiteStore.open(workdir / "data" / ".scheduler" / "state.db")
    try:
        return getattr(store, method)(*args)
    finally:
        store.close()


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


def logs_cli(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "scheduler", "logs", *args, "--config",
                             str(workdir / "scheduler.yaml"), "--data-dir", str(workdir / "data")],
                            cwd=workdir, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- logs ---------------------------------------------------------------------------------------
def test_logs_follow_tails_a_running_run_until_it_ends(start_daemon, workdir: Path) -> None:
    gate = workdir / "gate"
    start_daemon(f"""
daemon: {{shutdown_grace: 2s}}
jobs:
  gated:
    kind: command
    run_on_start: true
    shell: 'echo first; echo warn >&2; while [ ! -f {gate} ]; do sleep 0.05; done; echo second; exit 3'
""")
    wait_for(lambda: any(r.status == "running" for r in runs(workdir, "gated")), what="the run to start",
             retry_errors=True)
    follower = logs_cli(workdir, "gated", "--follow")
    assert follower.stdout is not None
    seen = [follower.stdout.readline().rstrip("\n") for _ in range(2)]  # printed while the run still waits
    assert sorted(seen) == ["first", "warn"]
    assert runs(workdir, "gated")[0].status == "running"
    gate.touch()
    out, err = follower.communicate(timeout=30)
    assert out.splitlines() == ["second"], err
    assert follower.returncode == 1  # the run failed (exit 3): --follow exits like run-job would
    [record] = runs(workdir, "gated")
    as_json = run_cli(workdir, "logs", str(record.id), "--json")
    assert as_json.returncode == 0, as_json.stderr
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(o["stream"], o["line"]) for o in objects if o["stream"] == "stdout"] == [("stdout", "first"),
                                                                                       ("stdout", "second")]
    assert ("stderr", "warn") in [(o["stream"], o["line"]) for o in objects]
    assert all(o["run_id"] == record.id and o["ts"] for o in objects)
    assert [o["seq"] for o in objects] == sorted(o["seq"] for o in objects)


def test_stored_output_is_masked_and_cut_in_the_middle(workdir: Path) -> None:
    (workdir / "noisy.py").write_text(
        "import os\n"
        "def job(ctx):\n"
        "    print('python sees', os.environ['API_TOKEN'], flush=True)\n"
        "    ctx.log.info('calling api', token=os.environ['API_TOKEN'], page=1)\n")
    (workdir / "scheduler.yaml").write_text(f"""
state: {{max_output: 4k}}
defaults:
  env: {{API_TOKEN: "${{CANARY_VALUE}}"}}
jobs:
  chatty:
    kind: command
    shell: 'echo "token $API_TOKEN"; i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done'
  noisy:
    kind: python
    function: noisy:job
    cwd: {workdir}
""")
    env = {**child_env(), "CANARY_VALUE": CANARY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scheduler", *args, "--config", str(workdir / "scheduler.yaml"),
                               "--data-dir", str(workdir / "data")], cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=120)

    for job in ("chatty", "noisy"):
        done = cli("run-job", job)
        assert done.returncode == 0, done.stdout + done.stderr
    chatty = cli("logs", "chatty")
    assert chatty.returncode == 0, chatty.stderr
    lines = chatty.stdout.splitlines()
    assert lines[0] == "token ***"
    assert lines[1:4] == ["line 0", "line 1", "line 2"]
    assert lines[-1] == "line 1999"
    [marker] = [ln for ln in lines if ln.startswith("[...")]
    match = re.fullmatch(r"\[\.\.\. ([\d,]+) lines \(([\d.]+) KiB\) cut \.\.\.\]", marker)
    assert match, marker
    kept = [ln for ln in lines if ln.startswith("line ")]
    assert int(match.group(1).replace(",", "")) == 2000 - len(kept)  # every line is either kept or counted
    assert len(chatty.stdout.encode()) <= 4096 + len(marker) + 1
    noisy = cli("logs", "noisy")
    assert "python sees ***" in noisy.stdout.splitlines()
    assert any(ln.startswith("info calling api") and "token=***" in ln and "page=1" in ln
               for ln in noisy.stdout.splitlines()), noisy.stdout
    everything = chatty.stdout + noisy.stdout + cli("logs", "noisy", "--json").stdout
    assert CANARY not in everything


# --- pause and resume ---------------------------------------------------------------------------
def _metric(text: str, name: str, job: str) -> float | None:
    match = re.search(rf'^{name}\{{job="{job}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


def test_pause_stops_firing_across_restarts_and_resume_catches_up(start_daemon, workdir: Path) -> None:
    config = f"""
http: {{listen: "127.0.0.1:0", api_token: {TOKEN}}}
daemon: {{shutdown_grace: 2s}}
jobs:
  tick: {{kind: command, every: 1s, command: ["true"], catchup: all, max_catchup: 1000, concurrency: allow}}
  other: {{kind: command, every: 1s, command: ["true"]}}
"""
    daemon = start_daemon(config)
    wait_for(lambda: any(r.status == "success" for r in runs(workdir, "tick")), what="a first tick", retry_errors=True)
    paused = run_cli(workdir, "pause", "tick", "--reason", "maintenance window")
    assert paused.returncode == 0 and "paused tick" in paused.stdout, paused.stderr
    seen = event_time(daemon.wait_event("job paused", timeout=5))  # within ~1 s of the store change
    auth = {"Authorization": f"Bearer {TOKEN}"}
    jobs = {j["job"]: j for j in json.loads(http("GET", daemon.url + "/jobs", auth)[1])["jobs"]}
    assert (jobs["tick"]["paused"], jobs["tick"]["paused_reason"], jobs["other"]["paused"]) == (
        True, "maintenance window", False)
    wait_for(lambda: _metric(http("GET", daemon.url + "/metrics")[1].decode(), "scheduler_job_paused", "tick") == 1,
               what="scheduler_job_paused 1", retry_errors=True)
    status = json.loads(run_cli(workdir, "status", "--json").stdout)
    assert {r["job"]: r["paused"] for r in status} == {"tick": True, "other": False}
    listed = json.loads(run_cli(workdir, "list", "--json").stdout)
    assert {r["job"]: r["paused"] for r in listed} == {"tick": True, "other": False}
    assert daemon.stop() == 0

    daemon = start_daemon(config)  # the pause is in the store: it survives the restart
    started = event_time(daemon.wait_event("scheduler started"))
    wait_for(lambda: sum(1 for r in runs(workdir, "other") if r.started_at and r.started_at > started
                           and r.status == "success") >= 3, what="three runs of the other job", retry_errors=True)
    assert not [r for r in runs(workdir, "tick") if r.started_at and r.started_at > seen + GRACE], \
        "a paused job fired"
    resumed = run_cli(workdir, "resume", "tick")
    assert resumed.returncode == 0 and "resumed tick" in resumed.stdout
    back = event_time(daemon.wait_event("job resumed", timeout=5))

    def caught_up() -> bool:
        slots = {r.slot for r in runs(workdir, "tick") if r.status == "success"}
        expected = {datetime.fromtimestamp(t, seen.tzinfo) for t in range(int(seen.timestamp()) + 2,
                                                                           int(back.timestamp()))}
        return expected <= slots

    wait_for(caught_up, 30, "every slot missed while paused to run (catchup: all)", retry_errors=True)
    wait_for(lambda: _metric(http("GET", daemon.url + "/metrics")[1].decode(), "scheduler_job_paused", "tick") == 0,
               what="scheduler_job_paused 0", retry_errors=True)


# --- trigger ------------------------------------------------------------------------------------
def test_trigger_runs_through_the_daemon_from_the_cli_and_http(start_daemon, workdir: Path) -> None:
    daemon = start_daemon(f"""
http: {{listen: "127.0.0.1:0", api_token: {TOKEN}}}
daemon: {{shutdown_grace: 2s}}
jobs:
  nightly: {{kind: command, schedule: "0 3 * * *", command: ["true"], concurrency: allow}}
""")
    url = daemon.url
    latest = run_cli(workdir, "trigger", "nightly")
    assert latest.returncode == 0 and "claimed by" in latest.stdout, latest.stdout + latest.stderr
    dated = run_cli(workdir, "trigger", "nightly", "--date", "2026-01-05")
    assert dated.returncode == 0, dated.stderr
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = http("POST", url + "/jobs/nightly/run?date=2026-01-06", auth)
    assert status == 202 and json.loads(body)["logical_date"] == "2026-01-06"
    assert _post(url + "/jobs/nightly/run", b'{"date": "2026-01-07"}', auth) == 202
    assert _post(url + "/jobs/nightly/run", b'{"date": "01/07/2026"}', auth) == 400
    assert http("POST", url + "/jobs/nightly/run?date=yesterday", auth)[0] == 400

    def dates() -> set[date]:
        return {r.logical_date for r in runs(workdir, "nightly") if r.status == "success"}

    wait_for(lambda: {date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)} <= dates() and len(dates()) == 4,
               what="four runs", retry_errors=True)
    triggers = {r.logical_date: r.trigger for r in runs(workdir, "nightly")}
    assert (triggers[date(2026, 1, 5)], triggers[date(2026, 1, 6)]) == ("request", "api")


def test_trigger_without_a_daemon_is_withdrawn(workdir: Path) -> None:
    (workdir / "scheduler.yaml").write_text('jobs:\n  j: {kind: command, command: ["true"]}\n')
    done = run_cli(workdir, "trigger", "j", "--wait", "0.5")
    assert done.returncode == 1
    assert "no running scheduler claimed the request" in done.stderr and "withdrawn" in done.stderr
    assert store_call(workdir, "claim_triggers", "x", lambda job, day: datetime(2026, 1, 1).astimezone()) == []


def test_each_request_is_claimed_by_exactly_one_of_two_daemons(workdir: Path) -> None:
    from ops_helpers import Daemon

    config = workdir / "scheduler.yaml"
    config.write_text('daemon: {shutdown_grace: 2s}\n'
                      'jobs:\n  j: {kind: command, command: ["true"], concurrency: allow}\n')
    daemons = [Daemon(config, workdir / "data", workdir).start() for _ in range(2)]
    try:
        for d in daemons:
            d.wait_event("scheduler started")
        for day in range(1, 9):
            assert run_cli(workdir, "trigger", "j", "--date", f"2026-02-0{day}", "--no-wait").returncode == 0
        wait_for(lambda: len([r for r in runs(workdir, "j") if r.status == "success"]) == 8, what="eight runs",
                 retry_errors=True)
        claims = [e["request_id"] for d in daemons for e in d.events("run requested")]
        assert sorted(claims) == list(range(1, 9))
    finally:
        for d in daemons:
            d.stop()


# --- run_on_start, queue, pause_after_failures ------------------------------------------------
def test_run_on_start_fires_once_at_start_and_not_on_reload(start_daemon, workdir: Path) -> None:
    daemon = start_daemon("""
daemon: {shutdown_grace: 2s}
jobs:
  warmup: {kind: command, run_on_start: true, command: ["true"]}
  probe: {kind: command, command: ["true"]}
""")
    wait_for(lambda: [r.trigger for r in runs(workdir, "warmup") if r.status == "success"] == ["start"],
               what="the start run", retry_errors=True)
    (workdir / "scheduler.yaml").write_text((workdir / "scheduler.yaml").read_text() + "# reloaded\n")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_event("config reloaded")
    assert run_cli(workdir, "trigger", "probe").returncode == 0
    wait_for(lambda: any(r.status == "success" for r in runs(workdir, "probe")), what="the probe run",
             retry_errors=True)
    assert [r.trigger for r in runs(workdir, "warmup")] == ["start"]


def test_queue_runs_one_waiting_slot_right_after_and_skips_the_rest(start_daemon, workdir: Path) -> None:
    gate = workdir / "gate"
    start_daemon(f"""
daemon: {{shutdown_grace: 2s}}
jobs:
  serial:
    kind: command
    every: 1s
    concurrency: queue
    shell: 'while [ ! -f {gate} ]; do sleep 0.05; done'
""")
    wait_for(lambda: any("already waiting (concurrency: queue)" in (r.error or "") for r in runs(workdir, "serial")),
               what="a slot skipped while another waits", retry_errors=True)
    gate.touch()
    wait_for(lambda: len([r for r in runs(workdir, "serial") if r.status == "success"]) >= 2, what="two runs",
             retry_errors=True)
    done = sorted((r for r in runs(workdir, "serial") if r.status == "success"), key=lambda r: r.slot)
    first, waiting = done[0], done[1]
    assert waiting.started_at is not None and first.ended_at is not None
    assert waiting.started_at >= first.ended_at, "the waiting slot ran only after the active run"
    skipped = [r for r in runs(workdir, "serial") if "already waiting" in (r.error or "")]
    assert all(r.status == "skipped" and first.slot < waiting.slot < r.slot for r in skipped), \
        "the first slot to fire while the run was active is the one that waited; later ones were skipped"


def test_pause_after_failures_pauses_alerts_once_and_counts_again_after_resume(
        start_daemon, workdir: Path, receiver: Receiver) -> None:
    daemon = start_daemon(f"""
daemon: {{shutdown_grace: 2s}}
jobs:
  flaky:
    kind: command
    every: 1s
    shell: "exit 3"
    pause_after_failures: 2
    on_failure: [{{url: "{receiver.url}/hook"}}]
""")
    daemon.wait_event("job paused", timeout=30)
    wait_for(lambda: len(receiver.events("failure")) >= 2, what="two failure alerts", retry_errors=True)
    alerts = receiver.events("failure")
    assert [a["paused"] for a in alerts] == [False, True]
    assert "paused after 2 failed runs in a row" in alerts[1]["text"] and "scheduler resume flaky" in alerts[1]["text"]
    [control] = store_call(workdir, "job_controls").values()
    assert (control.paused, control.changed_by, control.run_id) == (True, "pause_after_failures", alerts[1]["run_id"])
    status = {r["job"]: r for r in json.loads(run_cli(workdir, "status", "--json").stdout)}
    assert status["flaky"]["paused"] is True
    assert run_cli(workdir, "resume", "flaky").returncode == 0
    wait_for(lambda: len(daemon.events("job paused")) == 2, 30, "paused again after two fresh failures",
             retry_errors=True)
    wait_for(lambda: len(receiver.events("failure")) >= 4, what="four failure alerts", retry_errors=True)
    alerts = receiver.events("failure")
    assert [a["paused"] for a in alerts] == [False, True, False, True]
    failed = [r for r in runs(workdir, "flaky") if r.status == "failed"]
    assert len(failed) == 4


def _post(url: str, data: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, method="POST", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
