"""Fixtures for container-kind tests against a real Docker engine.

Without a reachable engine the ``docker`` tests are skipped, except under ``CI=true``, where a
missing engine is a failure: CI starts one (``.ci/docker-up.sh``), so its absence is a bug.
Every test gets its own ``instance`` label, and afterwards no container with it may remain.

Swarm tests run on a real single-node swarm: ``swarm`` initialises one on the shared engine
when it is not in a swarm already (``docker swarm init --advertise-addr 127.0.0.1``), and leaves
it at the end of the session only if it initialised it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from container_helpers import all_ours, docker_cli, ensure_test_image, no_engine, services_of

from scheduler.kinds.container.spec import LABEL_INSTANCE, DockerSettings


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    try:
        import docker  # noqa: F401

        from scheduler.kinds.container.engine import make_client

        client = make_client(DockerSettings())
        client.ping()
    except Exception as exc:  # any failure to connect means "no engine" here
        no_engine(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    ensure_test_image(client)
    yield client
    # After the whole session: nothing the scheduler labelled may be left on the engine.
    try:
        leftovers = all_ours(client)
        for c in leftovers:
            client.api.remove_container(c["Id"], force=True)
        assert not leftovers, f"containers left after the suite: {[c['Names'] for c in leftovers]}"
    finally:
        client.close()


@pytest.fixture
def settings(docker_client: Any, tmp_path: Path) -> Iterator[DockerSettings]:
    """Settings with a per-test instance label; afterwards no container with it may remain."""
    instance = f"test-{uuid.uuid4().hex[:10]}"
    yield DockerSettings(instance=instance, allowed_host_paths=(str(tmp_path),), stop_grace="2s")
    leftovers = docker_client.api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"})
    for c in leftovers:
        docker_client.api.remove_container(c["Id"], force=True)
    assert not leftovers, f"containers left behind: {[c['Names'] for c in leftovers]}"




def _swarm_state(client: Any) -> tuple[str, bool]:
    info = client.info().get("Swarm") or {}
    return info.get("LocalNodeState", ""), bool(info.get("ControlAvailable"))


@pytest.fixture(scope="session")
def swarm(docker_client: Any) -> Iterator[str]:
    """The engine as a swarm manager; yields this node's id."""
    from scheduler.kinds.container.engine import resolve_host

    cli = [docker_cli(), "-H", resolve_host(DockerSettings())]
    initialised = False
    state, manager = _swarm_state(docker_client)
    # Swarm mode creates this bridge on first use and leaves it behind: ours to remove if so.
    had_gwbridge = bool(docker_client.api.networks(names=["docker_gwbridge"]))
    if state == "inactive":
        done = subprocess.run([*cli, "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True, text=True)
        # Another session may have initialised it meanwhile: then it is theirs to leave.
        initialised = done.returncode == 0
        state, manager = _swarm_state(docker_client)
    if state != "active" or not manager:
        no_engine(f"the engine is not a swarm manager (swarm state {state!r})")
    node = docker_client.info()["Swarm"]["NodeID"]
    yield node
    if initialised:
        subprocess.run([*cli, "swarm", "leave", "--force"], capture_output=True, text=True, check=True)
        if not had_gwbridge:
            subprocess.run([*cli, "network", "rm", "docker_gwbridge"], capture_output=True, text=True)


@pytest.fixture
def swarm_settings(docker_client: Any, swarm: str, tmp_path: Path) -> Iterator[DockerSettings]:
    """``backend: swarm`` settings with a per-test instance label; afterwards no service with it
    may remain."""
    instance = f"test-{uuid.uuid4().hex[:10]}"
    yield DockerSettings(backend="swarm", instance=instance, allowed_host_paths=(str(tmp_path),), stop_grace="2s")
    leftovers = services_of(docker_client, instance)
    for service in leftovers:
        docker_client.api.remove_service(service["ID"])
    assert not leftovers, f"services left behind: {[s['Spec']['Name'] for s in leftovers]}"
