"""The daemon as PID 1 of the real image: JSON logs, health, `docker stop`, and reaping orphans.

Every container here runs hardened (``--read-only --tmpfs /tmp --cap-drop ALL
--security-opt no-new-privileges``), as the README tells users to run it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from image_helpers import HARDENED, Containers, docker, history, inspect, json_lines, with_config
from polling import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

ORPHANERS = 100
ZOMBIES = """
import os
found = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        stat = open(f'/proc/{pid}/stat').read()
    except OSError:
        continue
    if stat[stat.rfind(')') + 2] == 'Z':
        found.append(pid)
print(len(found))
"""


def finished(lines: list[str], job_prefix: str) -> list[dict[str, Any]]:
    """The "run finished" events of jobs whose name starts with ``job_prefix``."""
    return [e for e in json_lines(lines)
            if e.get("event") == "run finished" and str(e.get("job", "")).startswith(job_prefix)]


def at_least(count: int, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return items if len(items) >= count else None


def test_daemon_logs_json_is_pid1_and_turns_healthy(containers: Containers, config_dir) -> None:
    config = config_dir("""
        jobs:
          tick: {kind: command, every: 1s, command: [echo, tick]}
    """)
    volume = containers.volume()
    # The image's own health command, polled every 2 s instead of every 30 s.
    cid = containers.start(options=[*HARDENED, *with_config(config, volume), "--health-interval", "2s"])

    runs = wait_for(lambda: at_least(2, finished(containers.logs(cid), "tick")), 30,
                    "two runs of the one-second job in the logs", interval=0.25)
    assert all(r["status"] == "success" for r in runs)
    events = json_lines(containers.logs(cid))  # every line is JSON
    assert events[0]["event"] == "scheduler started" and events[0]["pid"] == 1

    argv = docker("exec", cid, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert argv[1:3] == ["/opt/venv/bin/scheduler", "run"], argv
    status = docker("exec", cid, "cat", "/proc/1/status").stdout
    assert "\nUid:\t10001\t" in status
    assert "CapEff:\t0000000000000000" in status

    wait_for(lambda: inspect("container", cid)["State"]["Health"]["Status"] == "healthy", 40, "healthy", interval=0.25)


def test_docker_stop_interrupts_the_running_job_and_exits_0_fast(containers: Containers, config_dir) -> None:
    config = config_dir("""
        jobs:
          hold: {kind: command, every: 1s, concurrency: forbid, shell: "sleep 60"}
    """)
    volume = containers.volume()
    cid = containers.start(options=[*HARDENED, *with_config(config, volume)])
    wait_for(lambda: any(e.get("event") == "run started" and e.get("job") == "hold"
                         for e in json_lines(containers.logs(cid))), 30, "the job to start", interval=0.25)

    started = time.monotonic()
    docker("stop", "--time", "10", cid, timeout=30)
    elapsed = time.monotonic() - started
    state = inspect("container", cid)["State"]
    assert elapsed < 3.0, f"docker stop took {elapsed:.1f}s"
    assert state["ExitCode"] == 0 and not state["OOMKilled"]

    runs = [r for r in history(containers, config, volume, "hold") if r["status"] != "skipped"]
    assert [r["status"] for r in runs] == ["interrupted"], runs


def test_orphaned_grandchildren_leave_no_zombies(containers: Containers, config_dir) -> None:
    # Cron slots a few seconds ahead (the container must be up first), spread over two seconds.
    start = datetime.now(UTC) + timedelta(seconds=8)
    lines = ["jobs:"]
    for i in range(ORPHANERS):
        at = start + timedelta(milliseconds=20 * i)
        # Each run orphans a grandchild in its own session, out of reach of the group kill, then
        # fails with exit 3; the grandchild is reparented to PID 1: the scheduler.
        lines.append(f"  orphaner{i:03d}: {{kind: command, schedule: \"{at.second} {at.minute} {at.hour} * * *\", "
                     f"shell: \"setsid sleep 0.3 & exit 3\"}}")
    config = config_dir("\n".join(lines) + "\n")
    volume = containers.volume()
    cid = containers.start(options=[*HARDENED, *with_config(config, volume)])

    runs = wait_for(lambda: at_least(ORPHANERS, finished(containers.logs(cid), "orphaner")), 60,
                    f"{ORPHANERS} runs to finish", interval=0.25)
    # The reaper took the orphans, never our own children's exit statuses.
    assert {(r["status"], r["exit_code"]) for r in runs} == {("failed", 3)}
    assert len({r["job"] for r in runs}) == ORPHANERS

    def zombies() -> int:
        return int(docker("exec", cid, "python3", "-c", ZOMBIES).stdout.strip())

    # The grandchildren sleep 0.3 s after their parents exit; then each must be reaped.
    wait_for(lambda: zombies() == 0, 10, "no zombie processes in the container", interval=0.25)
    time.sleep(1.0)
    assert zombies() == 0
    assert inspect("container", cid)["State"]["Running"]
