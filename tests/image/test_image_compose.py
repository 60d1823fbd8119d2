"""docker-compose.yml brought up as the README says (copy .env.example to .env, then up), with the
compose CLI this host has: the scheduler gets healthy and a container job goes through the proxy.

The images are local: the scheduler image under test (``SCHEDULER_IMAGE`` in .env) and a proxy
image made from the host's HAProxy (``DOCKER_PROXY_IMAGE``), since ``haproxy:2.8-alpine`` cannot be
pulled here.  An override file gives the data volume a per-test name, because the shipped name
(``scheduler-data``) is the user's.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_helpers import PROXY_IMAGE, compose_cli, ensure_proxy_image
from image_helpers import REPO, docker, no_engine
from polling import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

SOCKET = "/var/run/docker.sock"


class Stack:
    """One compose project in its own directory, named uniquely; :meth:`down` removes all of it."""

    def __init__(self, cli: list[str], root: Path, name: str) -> None:
        self.cli, self.root, self.name = cli, root, name

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cli, "-p", self.name, "-f", "docker-compose.yml", "-f", "test-override.yml",
                               *args],
                              cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "-t", "5")


@pytest.fixture
def stack(image: str, tmp_path: Path) -> Iterator[Stack]:
    cli = compose_cli()
    if cli is None:
        no_engine("neither `docker compose` nor `docker-compose` is installed")
    if not (os.path.exists(SOCKET) and stat.S_ISSOCK(os.stat(SOCKET).st_mode)):
        no_engine(f"{SOCKET} is not a socket on this host")
    if ensure_proxy_image() is None:
        no_engine("haproxy is not installed on the host (apt-get install haproxy): no local proxy image")
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "docker-compose.yml", root)
    shutil.copytree(REPO / "compose", root / "compose")
    (root / "compose" / "docker-api-proxy.cfg").chmod(0o644)  # read by the proxy's uid 99
    tag = uuid.uuid4().hex[:8]
    instance = f"compose-test-{tag}"
    (root / "config").mkdir(mode=0o755)
    (root / "config").chmod(0o755)  # bind-mounted: its own mode is what uid 10001 sees
    (root / "config" / "jobs.yaml").write_text(textwrap.dedent(f"""
        docker:
          instance: {instance}
        jobs:
          sibling:
            kind: container
            image: scheduler-test-busybox:latest
            pull: never
            command: ["sh", "-c", "echo hello through the compose proxy; exit 7"]
    """))
    (root / "config" / "jobs.yaml").chmod(0o644)
    # README: `cp .env.example .env`, then set DOCKER_GID (and, here, the local images).
    env = (REPO / ".env.example").read_text()
    env += f"\nSCHEDULER_IMAGE={image}\nDOCKER_PROXY_IMAGE={PROXY_IMAGE}\nDOCKER_GID={os.stat(SOCKET).st_gid}\n"
    (root / ".env").write_text(env)
    volume = f"scheduler-test-compose-{tag}"
    (root / "test-override.yml").write_text(textwrap.dedent(f"""
        services:
          scheduler:
            environment:
              SCHEDULER_DATA_VOLUME: {volume}
        volumes:
          scheduler-data:
            name: {volume}
    """))
    box = Stack(cli, root, f"schedtest{tag}")
    try:
        yield box
    finally:
        box.down()
        for cid in docker("ps", "-aq", "--filter", f"label=org.cron-scheduler.instance={instance}").stdout.split():
            docker("rm", "-f", cid, check=False)


def test_compose_stack_runs_a_container_job_through_the_proxy(stack: Stack) -> None:
    up = stack("up", "-d", "--no-build")
    assert up.returncode == 0, up.stdout + up.stderr
    cid = stack("ps", "-q", "scheduler").stdout.strip()
    assert cid, stack("ps").stdout

    # The compose file's health check: healthy once the daemon loop ticks (first check after 30 s).
    def health() -> str | None:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", cid, check=False).stdout.strip()
        assert status != "unhealthy", stack("logs", "--no-color").stdout[-3000:]
        return status if status == "healthy" else None

    wait_for(health, 120, "the scheduler service to be healthy", interval=1)

    # A container job from inside the scheduler container: through docker-proxy to the engine.
    run = stack("exec", "-T", "scheduler", "scheduler", "run-job", "sibling")
    assert run.returncode == 1, run.stdout + run.stderr  # the job failed, as its container did
    assert "hello through the compose proxy" in run.stdout, run.stdout
    hist = stack("exec", "-T", "scheduler", "scheduler", "history", "sibling", "--json")
    assert hist.returncode == 0, hist.stdout + hist.stderr
    [record] = json.loads(hist.stdout)
    assert record["status"] == "failed" and record["exit_code"] == 7, record

    # The proxy refuses what container jobs do not need, from the scheduler's side of the network.
    probe = ("import urllib.request, urllib.error\n"
             "for path in ('/_ping', '/info', '/volumes'):\n"
             "    try: print(urllib.request.urlopen('http://docker-proxy:2375' + path, timeout=5).status)\n"
             "    except urllib.error.HTTPError as exc: print(exc.code)\n")  # fmt: skip
    codes = stack("exec", "-T", "scheduler", "/opt/venv/bin/python", "-c", probe)
    assert codes.stdout.split() == ["200", "403", "403"], codes.stdout + codes.stderr
