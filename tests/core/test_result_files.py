"""Result files left by a SIGKILLed runner are removed by the next daemon start or ``run-job``."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from coretools import LoggedProcess, children_of, processes_with
from polling import wait_for

from scheduler import resultfiles
from scheduler.process import host_tag
from scheduler.state import StateStore

SLOT = datetime(2026, 11, 5, 3, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path):
    s = StateStore.open(tmp_path / "data" / ".scheduler" / "state.db")
    yield s
    s.close()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_which_files_are_stale(store: StateStore, tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = store.start_run("a", SLOT, date(2026, 11, 5), "manual")
    finished = store.start_run("b", SLOT, date(2026, 11, 5), "manual")
    store.finish_run(finished, "success")
    alive = subprocess.Popen(["sleep", "60"])
    here, elsewhere = host_tag(), "other_container_1" if host_tag() != "other_container_1" else "other_2"
    names = {
        f"run-{running}-{alive.pid}-{here}-abcd1234.json": False,          # a live runner here
        f"run-{running}-{alive.pid}-{here}-abcd1234.json.tmp": False,      # ... and its worker's temp
        f"run-{running}-{dead_pid()}-{here}-efgh5678.json": True,          # its runner here is gone
        f"run-{running}-{os.getpid()}-{here}-ijkl9012.json": True,         # an earlier process of our pid
        f"run-{running}-4242-{elsewhere}-mnop3456.json": False,            # another host, its run goes on
        f"run-{finished}-4242-{elsewhere}-qrst7890.json": True,            # another host, its run is over
        f"run-{finished}-{alive.pid}-{here}-uvwx1234.json": True,          # a live pid, but the run is over
        f"run-{running}-k3j_x9a2.json": False,                             # old name, run still going
        f"run-{finished}-k3j_x9a2.json": True,                             # old name, run over
        f"run-{finished}-k3j_x9a2.json.tmp": True,
        "run-999-zzzz0000.json": True,                                     # no such run at all
        "notes.txt": False,                                                # not ours
    }
    directory = resultfiles.result_dir(data)
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).touch()
    try:
        removed = resultfiles.sweep(data, lambda run_id: (r := store.get_run(run_id)) is not None
                                    and r.status == "running")
    finally:
        alive.kill()
        alive.wait()
    assert sorted(p.name for p in removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(p.name for p in directory.iterdir()) == sorted(n for n, stale in names.items() if not stale)


def test_a_new_file_names_its_owner(tmp_path: Path) -> None:
    path = resultfiles.create(tmp_path, 17)
    assert path.name.startswith(f"run-17-{os.getpid()}-{host_tag()}-") and path.name.endswith(".json")
    assert resultfiles.is_stale(path.name, lambda run_id: True)  # swept by its own pid: an earlier process's
    assert not resultfiles.is_stale("run-17-k3j_x9a2.json", lambda run_id: True)


@pytest.fixture
def workdir(tmp_path: Path, write_config) -> tuple[Path, Path]:
    (tmp_path / "slowjob.py").write_text("import time\n\ndef run(ctx):\n    time.sleep(600)\n")
    config = write_config("""
        jobs:
          slow:
            kind: python
            function: slowjob:run
            schedule: "0 3 * * *"
            catchup: none
          quick:
            kind: command
            command: ["true"]
            schedule: "0 4 * * *"
            catchup: none
    """)
    return config, tmp_path / "data"


def kill_a_run(cmd: list[str], env: dict[str, str], config: Path, data: Path, cwd: Path) -> Path:
    """``run-job slow``, SIGKILLed with its worker once the run is under way; returns the file left."""
    run = LoggedProcess([*cmd, "run-job", "slow", "--config", str(config), "--data-dir", str(data),
                         "--log-format", "json"], cwd / f"run-{len(os.listdir(cwd))}.log", env, cwd=cwd)
    directory = resultfiles.result_dir(data)
    try:
        left = wait_for(lambda: list(directory.glob(f"run-*-{run.proc.pid}-*.json")), what="result file")
        worker = wait_for(
            lambda: [pid for pid in children_of(run.proc.pid) if pid in processes_with("scheduler.worker")],
            what="the worker child")[0]
        run.proc.kill()  # as `docker kill` does: no handler runs, nothing is cleaned up
        os.kill(worker, signal.SIGKILL)
    finally:
        run.finish(signal.SIGKILL)
    assert left[0].exists()
    return left[0]


def test_run_job_removes_files_of_killed_runs(scheduler_cmd, scheduler_env, workdir, tmp_path: Path) -> None:
    config, data = workdir
    first = kill_a_run(scheduler_cmd, scheduler_env, config, data, tmp_path)
    second = kill_a_run(scheduler_cmd, scheduler_env, config, data, tmp_path)  # its start removed the first's
    assert not first.exists() and second.exists()
    left = [second]
    quick = LoggedProcess([*scheduler_cmd, "run-job", "quick", "--config", str(config), "--data-dir", str(data),
                           "--log-format", "json"], tmp_path / "quick.log", scheduler_env, cwd=tmp_path)
    assert quick.finish() == 0
    assert not any(p.exists() for p in left)
    assert list(resultfiles.result_dir(data).iterdir()) == []
    removed = [e for e in quick.events() if e.get("event") == "stale result files removed"]
    assert [e["count"] for e in removed] == [1]


def test_daemon_start_removes_files_of_killed_runs(scheduler_cmd, scheduler_env, workdir, tmp_path: Path) -> None:
    config, data = workdir
    left = kill_a_run(scheduler_cmd, scheduler_env, config, data, tmp_path)
    daemon = LoggedProcess([*scheduler_cmd, "run", "--config", str(config), "--data-dir", str(data),
                            "--log-format", "json"], tmp_path / "daemon.log", scheduler_env, cwd=tmp_path)
    try:
        wait_for(lambda: daemon.has("scheduler started") or daemon.proc.poll() is not None, what="daemon start")
        assert daemon.proc.poll() is None, daemon.events()
        assert not left.exists()
        assert daemon.has("stale result files removed")
    finally:
        assert daemon.finish(signal.SIGTERM) == 0


def test_a_live_run_keeps_its_file_while_run_job_starts_beside_it(scheduler_cmd, scheduler_env, workdir,
                                                                  tmp_path: Path) -> None:
    config, data = workdir
    slow = LoggedProcess([*scheduler_cmd, "run-job", "slow", "--config", str(config), "--data-dir", str(data),
                          "--log-format", "json"], tmp_path / "slow.log", scheduler_env, cwd=tmp_path)
    try:
        live = wait_for(lambda: list(resultfiles.result_dir(data).glob("run-*.json")), what="result file")[0]
        quick = LoggedProcess([*scheduler_cmd, "run-job", "quick", "--config", str(config), "--data-dir",
                               str(data), "--log-format", "json"], tmp_path / "quick.log", scheduler_env, cwd=tmp_path)
        assert quick.finish() == 0
        assert live.exists()
    finally:
        assert slow.finish(signal.SIGTERM) == 143
    assert not live.exists()  # read and removed by its own runner
