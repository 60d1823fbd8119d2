"""The real daemon as a subprocess: signals, concurrency policies, reload, crash recovery."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coretools import processes_with, unique_seconds
from polling import wait_for

from scheduler.state import StateStore


class DaemonProc:
    """A ``scheduler run`` child with its JSON log lines collected as they arrive."""

    def __init__(self, cmd: list[str], config: Path, data: Path, env: dict[str, str]) -> None:
        self.log_path = data.parent / f"daemon-{time.monotonic_ns()}.log"
        self.log_file = self.log_path.open("wb")
        self.data = data
        self.proc = subprocess.Popen([*cmd, "run", "--config", str(config), "--data-dir", str(data),
                                      "--log-format", "json"], stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=env)

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "line": line})
        return out

    def has(self, event: str, **fields) -> bool:
        return any(e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in self.events())

    def runs(self, job: str | None = None):
        store = StateStore.open(self.data / ".scheduler" / "state.db")
        try:
            return store.history(job, 1000)
        finally:
            store.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()


@pytest.fixture
def daemon(scheduler_cmd, scheduler_env, tmp_path):
    started: list[DaemonProc] = []

    def start(config: Path) -> DaemonProc:
        d = DaemonProc(scheduler_cmd, config, tmp_path / "data", scheduler_env)
        started.append(d)
        wait_for(lambda: d.has("scheduler started") or d.proc.poll() is not None, what="daemon start")
        assert d.proc.poll() is None, d.log_path.read_text()
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_sigterm_interrupts_running_job_and_exits_zero_within_grace(daemon, write_config):
    grace = 2.0
    sleep = f"sleep {unique_seconds(211)}"
    d = daemon(write_config(f"""
        daemon: {{shutdown_grace: {grace}s}}
        jobs:
          stubborn: {{kind: command, every: 1s, shell: "trap '' TERM; {sleep} & wait; {sleep}"}}
    """))
    wait_for(lambda: processes_with(sleep), what="job running")
    began = time.monotonic()
    code = d.stop(signal.SIGTERM)
    elapsed = time.monotonic() - began
    assert code == 0
    assert elapsed < grace + 2, f"took {elapsed:.1f}s"
    runs = [r for r in d.runs("stubborn") if r.status != "skipped"]  # a slow host may fire (and forbid) a slot more
    assert runs and all(r.status == "interrupted" for r in runs)
    assert processes_with(sleep) == []


def test_second_signal_escalates_at_once(daemon, write_config):
    sleep = f"sleep {unique_seconds(212)}"
    d = daemon(write_config(f"""
        daemon: {{shutdown_grace: 30s}}
        jobs:
          stubborn: {{kind: command, every: 1s, shell: "trap '' TERM; {sleep} & wait; {sleep}"}}
    """))
    wait_for(lambda: processes_with(sleep), what="job running")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: d.has("shutting down"), what="shutdown start")
    began = time.monotonic()
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(10) == 0
    assert time.monotonic() - began < 10
    assert processes_with(sleep) == []
    assert all(r.status == "interrupted" for r in d.runs("stubborn") if r.status != "skipped")


def test_forbid_records_skipped_runs(daemon, write_config):
    d = daemon(write_config(f"""
        jobs:
          slow: {{kind: command, every: 1s, shell: "sleep {unique_seconds(2.5)}", concurrency: forbid}}
    """))
    wait_for(lambda: any(r.status == "skipped" for r in d.runs("slow")), what="a skipped slot")
    assert d.stop() == 0
    runs = d.runs("slow")
    skipped = [r for r in runs if r.status == "skipped"]
    assert skipped and "concurrency: forbid" in skipped[0].error
    # never two at once: executed runs do not overlap
    executed = sorted((r for r in runs if r.status != "skipped"), key=lambda r: r.started_at)
    for earlier, later in itertools.pairwise(executed):
        assert earlier.ended_at <= later.started_at


def test_allow_runs_overlap(daemon, write_config):
    sleep = f"sleep {unique_seconds(2.5)}"
    d = daemon(write_config(f"""
        jobs:
          slow: {{kind: command, every: 1s, shell: "{sleep}", concurrency: allow}}
    """))
    wait_for(lambda: len(processes_with(sleep)) >= 2, what="two overlapping runs")
    d.stop()
    assert not any(r.status == "skipped" for r in d.runs("slow"))


def test_replace_stops_the_running_one_first(daemon, write_config):
    seconds = unique_seconds(213)
    d = daemon(write_config(f"""
        jobs:
          slow: {{kind: command, every: 1s, command: [sleep, "{seconds}"], concurrency: replace, kill_grace: 1s}}
    """))
    wait_for(lambda: any(r.status == "interrupted" for r in d.runs("slow")), what="a replaced run")
    assert len(processes_with(f"sleep {seconds}")) <= 1
    d.stop()
    replaced = [r for r in d.runs("slow") if r.error and "replaced by a newer run" in r.error]
    assert replaced


def test_after_job_runs_on_success_with_upstream_logical_date(daemon, write_config):
    d = daemon(write_config("""
        jobs:
          up: {kind: command, every: 1s, command: ["true"]}
          down: {kind: command, after: up, shell: "echo $SCHEDULER_LOGICAL_DATE"}
          blocked: {kind: command, after: broken, command: ["true"]}
          broken: {kind: command, every: 1s, command: ["false"]}
    """))
    wait_for(lambda: d.runs("down"), what="downstream run")
    wait_for(lambda: d.runs("broken"), what="broken run")
    d.stop()
    up = {r.slot: r for r in d.runs("up")}
    for run in d.runs("down"):
        assert run.trigger == "after" and run.slot in up
        assert run.logical_date == up[run.slot].logical_date
    assert d.runs("blocked") == []


def test_sighup_reloads_and_bad_config_keeps_old(daemon, write_config, tmp_path):
    path = write_config("""
        jobs:
          first: {kind: command, every: 1s, command: ["true"]}
    """)
    d = daemon(path)
    wait_for(lambda: d.runs("first"), what="first job runs")
    path.write_text("jobs:\n  first: {kind: command, every: 1s, command: [\"true\"], schedul: x}\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config reload failed; keeping the running config"), what="reload refusal")
    count = len(d.runs("first"))
    wait_for(lambda: len(d.runs("first")) > count, what="old config still running")
    path.write_text("jobs:\n  second: {kind: command, every: 1s, command: [\"true\"]}\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.runs("second"), what="new job after reload")
    assert d.stop() == 0


def test_reload_removing_a_job_then_sigterm_records_only_what_the_shutdown_path_says(daemon, write_config):
    """A reload drops a job whose runs wait for a free run slot, then SIGTERM: the running run is
    recorded ``interrupted`` by the shutdown, a kept job's waiting run as interrupted while queued,
    and the removed job gets no record at all (its waiting runs are not the config's any more)."""
    hold_s = unique_seconds(216)
    jobs = f"""
        daemon: {{max_parallel_runs: 1, shutdown_grace: 2s}}
        jobs:
          hold: {{kind: command, every: 1h, run_on_start: true, command: [sleep, "{hold_s}"]}}
          kept: {{kind: command, every: 1s, command: ["true"]}}
    """
    path = write_config(jobs + """
          removed: {kind: command, every: 1s, command: ["true"]}
    """)
    d = daemon(path)
    wait_for(lambda: processes_with(f"sleep {hold_s}"), what="the long run holding the only run slot")
    queued_after = len(d.events())
    for job in ("kept", "removed"):
        wait_for(lambda job=job: any(e.get("event") == "run queued: parallel run limit reached" and e.get("job") == job
                                     for e in d.events()[queued_after:]), what=f"a {job} run waiting for the slot")
    removed_before = [(r.id, r.status) for r in d.runs("removed")]
    write_config(jobs, name=path.name)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.has("config reloaded", jobs=2), what="the reload")
    assert d.stop(signal.SIGTERM) == 0
    assert d.has("scheduler stopped")
    [held] = d.runs("hold")
    assert (held.status, held.error) == ("interrupted", "scheduler shutting down")
    assert processes_with(f"sleep {hold_s}") == []
    waited = [r for r in d.runs("kept") if r.status == "interrupted"]
    assert waited and all(r.error == "scheduler shutting down (the run was queued)" for r in waited)
    assert [(r.id, r.status) for r in d.runs("removed")] == removed_before
    assert all(r.status == "success" for r in d.runs("removed"))


def _start_run_in(db: Path, env: dict, job: str, keep_running: bool) -> tuple[int, subprocess.Popen]:
    """Create a ``running`` row from another process (which exits, or stays alive)."""
    code = (
        "import sys, time\n"
        "from datetime import date, datetime, timezone\n"
        "from pathlib import Path\n"
        "from scheduler.state import StateStore\n"
        f"s = StateStore.open(Path({str(db)!r}))\n"
        f"print(s.start_run({job!r}, datetime(2026, 1, 1, tzinfo=timezone.utc), date(2025, 12, 31), 'manual'),"
        " flush=True)\n"
        f"time.sleep({600 if keep_running else 0})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    run_id = int(proc.stdout.readline())
    if not keep_running:
        proc.wait(10)
    return run_id, proc


def test_runs_left_running_by_a_crash_become_abandoned(daemon, write_config, tmp_path, scheduler_env):
    db = tmp_path / "data" / ".scheduler" / "state.db"
    dead_id, _ = _start_run_in(db, scheduler_env, "ghost", keep_running=False)
    live_id, live = _start_run_in(db, scheduler_env, "beside", keep_running=True)  # a run-job beside the daemon
    try:
        d = daemon(write_config("""
            jobs:
              idle: {kind: command, schedule: "0 0 1 1 *", command: ["true"]}
        """))
        d.stop()
        statuses = {r.id: r.status for r in d.runs()}
        assert statuses[dead_id] == "abandoned" and statuses[live_id] == "running"
        assert d.has("run abandoned", job="ghost", run_id=dead_id)
    finally:
        live.kill()
        live.wait()


def test_daemon_never_imports_heavy_libraries(scheduler_env, write_config, tmp_path):
    path = write_config("""
        jobs:
          idle: {kind: command, schedule: "0 0 1 1 *", command: ["true"]}
    """)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from scheduler.config import load_compiled\n"
        "from scheduler.daemon import Daemon\n"
        "from scheduler.state import StateStore\n"
        f"cfg = load_compiled(Path({str(path)!r}))\n"
        f"store = StateStore.open(Path({str(tmp_path / 's.db')!r}))\n"
        f"Daemon(cfg, Path({str(path)!r}), Path({str(tmp_path)!r}), store).step()\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'numpy', 'docker', 'requests', 'pydantic', 'rich')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=scheduler_env, check=True)
    assert out.stdout.strip() == ""


def test_health_command_follows_the_loop(daemon, write_config, scheduler_cmd, scheduler_env, tmp_path):
    config = write_config("""
        jobs:
          idle: {kind: command, schedule: "0 0 1 1 *", command: ["true"]}
    """)
    check = [*scheduler_cmd, "health", "--config", str(config), "--data-dir", str(tmp_path / "data")]
    assert subprocess.run(check, capture_output=True, env=scheduler_env).returncode == 1
    d = daemon(config)
    proc = subprocess.run(check, capture_output=True, text=True, env=scheduler_env)
    assert proc.returncode == 0 and proc.stdout.startswith("healthy")
    d.stop()


def test_a_slot_cut_short_by_shutdown_runs_again_on_the_next_start(daemon, write_config):
    long_s, quick_s = unique_seconds(214), unique_seconds(215)
    config = write_config(f"""
        daemon: {{shutdown_grace: 1s}}
        jobs:
          long: {{kind: command, every: 2s, command: [sleep, "{long_s}"]}}
          quick: {{kind: command, every: 2s, catchup: none, command: [sleep, "{quick_s}"]}}
    """)
    first = daemon(config)
    wait_for(lambda: processes_with(f"sleep {long_s}") and processes_with(f"sleep {quick_s}"),
             what="both jobs running")
    # a later slot skipped meanwhile (forbid) must not hide the cut-short run
    wait_for(lambda: any(r.status == "skipped" for r in first.runs("long")), what="a slot skipped while it ran")
    assert first.stop() == 0
    [cut] = [r for r in first.runs("long") if r.status != "skipped"]
    assert cut.status == "interrupted" and cut.error == "scheduler shutting down"
    second = daemon(config)
    wait_for(lambda: second.has("resuming a slot the scheduler's stop interrupted", job="long"), what="resume")
    wait_for(lambda: processes_with(f"sleep {long_s}"), what="the slot running again")
    assert second.stop() == 0
    [again] = [r for r in second.runs("long") if r.id == cut.id]  # one row per job and slot
    assert again.slot == cut.slot and again.trigger == "catchup" and again.status == "interrupted"
    assert not second.has("resuming a slot the scheduler's stop interrupted", job="quick")  # catchup: none
