"""The real daemon with ``docker.backend: swarm``: orphan services are removed at start and their
runs abandoned; a shutdown stops running swarm runs within the grace."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from container_helpers import TEST_IMAGE, orphan_service, services_of, task_containers
from polling import wait_for

from scheduler.kinds.container.settings import DockerSettings
from scheduler.state import StateStore

pytestmark = pytest.mark.docker


class Daemon:
    """A ``scheduler run`` child with its JSON log collected in a file."""

    def __init__(self, cmd: list[str], config: Path, data: Path, env: dict[str, str]) -> None:
        self.log_path = data.parent / "daemon.log"
        self.data = data
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen([*cmd, "run", "--config", str(config), "--data-dir", str(data),
                                          "--log-format", "json"],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "raw", "line": line})
        return out

    def has(self, event: str, **fields: Any) -> bool:
        return any(e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in self.events())

    def statuses(self) -> dict[int, str]:
        store = StateStore.open(self.data / ".scheduler" / "state.db")
        try:
            return {r.id: r.status for r in store.history(None, 1000)}
        finally:
            store.close()


@pytest.fixture
def daemon(scheduler_cmd, scheduler_env, tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def start(config: Path) -> Daemon:
        d = Daemon(scheduler_cmd, config, tmp_path / "data", scheduler_env)
        started.append(d)
        wait_for(lambda: d.has("scheduler started") or d.proc.poll() is not None, timeout=60, what="daemon start")
        assert d.proc.poll() is None, d.log_path.read_text()
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def running_record(db: Path, env: dict[str, str], job: str) -> int:
    """A ``running`` run row written by a process that then exits, as a killed scheduler leaves it."""
    code = (
        "from datetime import date, datetime, timezone\n"
        "from pathlib import Path\n"
        "from scheduler.state import StateStore\n"
        f"s = StateStore.open(Path({str(db)!r}))\n"
        f"print(s.start_run({job!r}, datetime(2026, 1, 1, tzinfo=timezone.utc), date(2025, 12, 31), 'manual'))\n"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)


def swarm_section(settings: DockerSettings) -> str:
    return f"docker: {{backend: swarm, instance: {settings.instance}, stop_grace: 2s}}"


def test_daemon_start_removes_orphan_services_and_abandons_their_runs(
    docker_client, swarm_settings, daemon, write_config, scheduler_env, tmp_path: Path
) -> None:
    db = tmp_path / "data" / ".scheduler" / "state.db"
    db.parent.mkdir(parents=True)
    run_id = running_record(db, scheduler_env, "train")
    sid = orphan_service(swarm_settings, "train", run_id)
    d = daemon(write_config(f"""
        {swarm_section(swarm_settings)}
        jobs:
          train: {{kind: container, image: "{TEST_IMAGE}", schedule: "0 0 1 1 *", catchup: none, command: ["true"]}}
    """))  # fmt: skip
    assert services_of(docker_client, swarm_settings.instance) == []
    assert d.has("orphan container removed", detail=f"job=train run_id={run_id}")
    assert d.has("run abandoned", job="train", run_id=run_id)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    assert d.statuses()[run_id] == "abandoned"
    wait_for(lambda: not task_containers(docker_client, sid), what="the orphan's container to go")


def test_shutdown_stops_running_swarm_runs_within_the_grace(
    docker_client, swarm_settings, daemon, write_config
) -> None:
    grace = 6.0
    d = daemon(write_config(f"""
        daemon: {{shutdown_grace: {grace}s}}
        {swarm_section(swarm_settings)}
        jobs:
          stubborn: {{kind: container, image: "{TEST_IMAGE}", every: 1s, command: ["sleep", "600"], kill_grace: 4s}}
    """))  # fmt: skip

    def running_service() -> str | None:
        for service in services_of(docker_client, swarm_settings.instance):
            tasks = docker_client.api.tasks(filters={"service": service["ID"]})
            if any(t["Status"]["State"] == "running" for t in tasks):
                return service["ID"]
        return None

    sid = wait_for(running_service, timeout=60, what="a swarm run")
    began = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    elapsed = time.monotonic() - began
    # sleep as PID 1 ignores SIGTERM: only the kill after the stop grace ends it, within the grace.
    assert elapsed < grace + 2, f"took {elapsed:.1f}s"
    assert services_of(docker_client, swarm_settings.instance) == []
    statuses = d.statuses()  # slots fired while the run was active are skipped (concurrency: forbid)
    assert statuses.pop(min(statuses)) == "interrupted" and set(statuses.values()) <= {"skipped"}, statuses
    wait_for(lambda: not task_containers(docker_client, sid), what="the run's container to go")
