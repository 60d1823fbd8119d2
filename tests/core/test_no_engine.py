"""A daemon whose config has a container job but no Docker engine to reach: one warning that names
the job and says how to mount the engine, and the other jobs run on."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

from coretools import LoggedProcess
from polling import wait_for

from scheduler.state import StateStore


def test_daemon_without_engine_warns_once_and_runs_other_jobs(scheduler_cmd, scheduler_env, write_config,
                                                              tmp_path: Path) -> None:
    socket_path = f"/tmp/no-engine-{uuid.uuid4().hex}.sock"  # nothing listens there, nothing is created
    config = write_config(f"""
        docker:
          host: unix://{socket_path}
        jobs:
          train:
            kind: container
            image: scheduler-test-busybox:latest
            command: ["true"]
            schedule: "0 4 * * *"
            catchup: none
          tick:
            kind: command
            command: ["true"]
            every: 1s
            catchup: none
    """)
    data = tmp_path / "data"
    daemon = LoggedProcess([*scheduler_cmd, "run", "--config", str(config), "--data-dir", str(data),
                            "--log-format", "json"], tmp_path / "daemon.log", scheduler_env)
    try:
        wait_for(lambda: daemon.has("scheduler started") or daemon.proc.poll() is not None, what="daemon start")
        assert daemon.proc.poll() is None, daemon.events()

        def tick_succeeded() -> bool:
            store = StateStore.open(data / ".scheduler" / "state.db")
            try:
                return any(r.status == "success" for r in store.history("tick", 10))
            finally:
                store.close()

        wait_for(tick_succeeded, what="the command job to run beside the engine-less container job")
    finally:
        assert daemon.finish(signal.SIGTERM) == 0
    events = daemon.events()
    warnings = [e for e in events if e.get("event") == "container jobs need a Docker engine"]
    assert len(warnings) == 1, events
    warning = warnings[0]
    assert warning["level"] == "warning" and warning["jobs"] == ["train"]
    assert warning["error"] == (f"cannot reach the Docker engine at unix://{socket_path}: no socket at {socket_path}; "
                                f"mount it into this container (-v /var/run/docker.sock:{socket_path}) "
                                "or set DOCKER_HOST or docker.host")
    assert not any(e.get("event") == "orphan container cleanup failed" for e in events)
    assert not any("Traceback" in json.dumps(e) for e in events)


def test_a_container_run_without_engine_records_the_fix(scheduler_cmd, scheduler_env, write_config,
                                                        tmp_path: Path) -> None:
    socket_path = f"/tmp/no-engine-{uuid.uuid4().hex}.sock"
    config = write_config(f"""
        docker:
          host: unix://{socket_path}
        jobs:
          train:
            kind: container
            image: scheduler-test-busybox:latest
            command: ["true"]
    """)
    data = tmp_path / "data"
    proc = subprocess.run([*scheduler_cmd, "run-job", "train", "--config", str(config), "--data-dir", str(data),
                           "--log-format", "json"], capture_output=True, text=True, env=scheduler_env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and '"traceback"' not in proc.stdout
    store = StateStore.open(data / ".scheduler" / "state.db")
    try:
        [record] = store.history("train", 10)
    finally:
        store.close()
    assert record.status == "failed"
    assert record.error == (f"cannot reach the Docker engine at unix://{socket_path}: no socket at {socket_path}; "
                            f"mount it into this container (-v /var/run/docker.sock:{socket_path}) "
                            "or set DOCKER_HOST or docker.host")
