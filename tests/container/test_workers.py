"""A worker process running a container job is signalled or killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from container_helpers import REPO_ROOT, container_job, ours

from scheduler.kinds.container import cleanup_orphans, stop_all
from scheduler.kinds.container.settings import DockerSettings

pytestmark = pytest.mark.docker

CHILD = Path(__file__).with_name("run_in_child.py")


def start_worker(settings: DockerSettings, spec_fields: dict, data_dir: Path, run_id: int) -> subprocess.Popen:
    spec = container_job(**spec_fields)
    return subprocess.Popen(
        [sys.executable, str(CHILD), settings.model_dump_json(), spec.model_dump_json(), str(data_dir), str(run_id)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # as the runner starts workers
    )  # fmt: skip


def wait_running(client: Any, settings: DockerSettings, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in ours(client, settings) if c["State"] == "running"]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("the worker's container never started")


def test_orphans_of_a_sigkilled_worker_are_cleaned_up(docker_client, settings, tmp_path: Path) -> None:
    worker = start_worker(settings, {"command": ["sleep", "600"]}, tmp_path, run_id=41)
    try:
        container = wait_running(docker_client, settings)
        os.killpg(worker.pid, signal.SIGKILL)  # no handler runs: the container is orphaned
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert [c["Id"] for c in ours(docker_client, settings)] == [container["Id"]]

    other_instance = DockerSettings(instance=settings.instance + "-other")
    assert cleanup_orphans(other_instance) == []  # another scheduler's containers are not ours
    started = time.monotonic()
    removed = cleanup_orphans(settings, grace=1)
    assert removed == [("child_job", 41)]
    assert ours(docker_client, settings) == []
    assert time.monotonic() - started < 10


def test_sigterm_to_the_worker_stops_and_removes_its_container(docker_client, settings, tmp_path: Path) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"
    worker = start_worker(settings, {"command": ["sh", "-c", script], "kill_grace": "4s"}, tmp_path, run_id=42)
    try:
        wait_running(docker_client, settings)
        os.killpg(worker.pid, signal.SIGTERM)  # what the runner does on timeout or shutdown
        out, _ = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "error Interrupted: interrupted by signal 15" in out
    assert worker.returncode == 143
    assert ours(docker_client, settings) == []


def test_cleanup_command_the_daemon_runs_on_start(docker_client, settings, tmp_path: Path) -> None:
    worker = start_worker(settings, {"command": ["sleep", "600"]}, tmp_path, run_id=43)
    try:
        wait_running(docker_client, settings)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.kinds.container.cleanup"], input=settings.model_dump_json(),
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["job=child_job run_id=43"]
    assert ours(docker_client, settings) == []


def test_cleanup_command_fails_clearly_without_an_engine() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.kinds.container.cleanup"], input='{"host": "unix:///nonexistent.sock"}',
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("cannot reach the Docker engine at unix:///nonexistent.sock")


def test_stop_all_stops_running_containers_on_shutdown(docker_client, settings, tmp_path: Path) -> None:
    worker = start_worker(settings, {"command": ["sleep", "600"]}, tmp_path, run_id=44)
    try:
        wait_running(docker_client, settings)
        started = time.monotonic()
        assert stop_all(settings, grace=1) == [("child_job", 44)]
        assert time.monotonic() - started < 10
        out, _ = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert "error ContainerFailed: container exited with code 137" in out
    assert ours(docker_client, settings) == []
