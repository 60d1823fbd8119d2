"""The daemon as PID 1 of a PID namespace: orphans are reaped, our own exit codes are not stolen."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from coretools import zombies_of
from polling import wait_for

from scheduler.state import StateStore

JOBS = 200


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --pid (Linux)")
def test_pid1_reaps_orphans_and_keeps_exit_codes(write_config, scheduler_cmd, scheduler_env, tmp_path):
    start = datetime.now(UTC) + timedelta(seconds=4)
    lines = ["jobs:"]
    for i in range(JOBS):
        at = start + timedelta(milliseconds=20 * i)
        # Each run orphans a grandchild in its own session (beyond the reach of our group kill),
        # then fails with exit 3.  The grandchild is reparented to PID 1: the daemon.
        lines.append(f"  orphaner{i:03d}: {{kind: command, schedule: \"{at.second} {at.minute} {at.hour} * * *\", "
                     f"shell: \"setsid sleep 0.3 & exit 3\"}}")
    config = write_config("\n".join(lines) + "\n")
    data = tmp_path / "data"
    log = (tmp_path / "daemon.log").open("wb")
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *scheduler_cmd, "run",
                              "--config", str(config), "--data-dir", str(data), "--log-format", "json"],
                             stdout=log, stderr=subprocess.STDOUT, env=scheduler_env)
    try:
        daemon_pid = wait_for(lambda: (_children(outer.pid) or [None])[0], what="daemon in namespace")
        db = data / ".scheduler" / "state.db"
        wait_for(db.exists, what="state db")

        def finished() -> list:
            store = StateStore.open(db)
            try:
                runs = [r for r in store.history(None, 10 * JOBS) if r.status != "running"]
            finally:
                store.close()
            return runs if len({r.job for r in runs}) >= JOBS else []

        runs = wait_for(finished, timeout=120, interval=0.5, what="all runs recorded")
        assert all(r.status == "failed" and r.exit_code == 3 for r in runs), \
            {(r.status, r.exit_code) for r in runs}
        # Give the orphaned sleeps time to exit, then no zombie may be left under PID 1.
        wait_for(lambda: not zombies_of(daemon_pid) and not [p for p in _children(daemon_pid)
                                                            if _is_sleep(p)],
                 timeout=20, what="orphans reaped")
        assert zombies_of(daemon_pid) == []
        os.kill(daemon_pid, signal.SIGTERM)
        assert outer.wait(20) == 0
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait()
        log.close()
    events = [json.loads(line) for line in (tmp_path / "daemon.log").read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "scheduler started" and e.get("pid") == 1 for e in events)


def _is_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "sleep"
    except OSError:
        return False

