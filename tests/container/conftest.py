"""Fixtures for container-kind tests against a real Docker engine.

Without a reachable engine the ``docker`` tests are skipped, except under ``CI=true``, where a
missing engine is a failure: CI starts one (``.ci/docker-up.sh``), so its absence is a bug.
Every test gets its own ``instance`` label, and afterwards no container with it may remain.  The
labels of one session share a prefix, so when the session ends :func:`session_containers` can
check that nothing of *this* session is left, while other sessions use the same engine.

Swarm tests run on a real single-node swarm: ``swarm`` initialises one on the shared engine
when it is not in a swarm already (``docker swarm init --advertise-addr 127.0.0.1``), and leaves
it at the end of the session only if it initialised it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from container_helpers import docker_cli, ensure_test_image, no_engine, services_of, session_leftovers, session_services

from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_INSTANCE


@dataclass
class SessionContainers:
    """The instance-label prefix of this session's containers, and whether an engine was used."""

    prefix: str
    engine_used: bool = False


@pytest.fixture(scope="session", autouse=True)
def session_containers() -> Iterator[SessionContainers]:
    """At session end, fail the run if a container of this session is left on the engine.

    Whatever the order tests ran in (or a subset of them): the check runs after the last one.  It
    looks only at this session's instance prefix, so other sessions' containers on a shared engine
    are neither reported nor removed.  Leftovers are removed, then reported as a failure.
    """
    box = SessionContainers(prefix=f"test-{uuid.uuid4().hex[:8]}-")
    yield box
    if not box.engine_used:
        return
    from scheduler.kinds.container.engine import make_client

    client = make_client(DockerSettings())
    try:
        leftovers = session_leftovers(client, box.prefix)
        for c in leftovers:
            client.api.remove_container(c["Id"], force=True)
        services = session_services(client, box.prefix)
        for service in services:
            client.api.remove_service(service["ID"])
    finally:
        client.close()
    found = sorted(f"container {c['Names'][0].lstrip('/')} (instance {c['Labels'][LABEL_INSTANCE]})"
                   for c in leftovers)
    found += sorted(f"service {s['Spec']['Name']}" for s in services)
    if found:
        pytest.fail(f"left on the engine at the end of this test session: {', '.join(found)}", pytrace=False)


@pytest.fixture(scope="session")
def docker_client(session_containers: SessionContainers) -> Iterator[Any]:
    try:
        import docker  # noqa: F401

        from scheduler.kinds.container.engine import make_client

        client = make_client(DockerSettings())
        client.ping()
    except Exception as exc:  # any failure to connect means "no engine" here
        no_engine(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    session_containers.engine_used = True
    ensure_test_image(client)
    yield client
    client.close()


@pytest.fixture
def settings(docker_client: Any, session_containers: SessionContainers, tmp_path: Path) -> Iterator[DockerSettings]:
    """Settings with a per-test instance label; afterwards no container with it may remain."""
    instance = f"{session_containers.prefix}{uuid.uuid4().hex[:10]}"
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
def swarm_settings(docker_client: Any, swarm: str, session_containers: SessionContainers,
                   tmp_path: Path) -> Iterator[DockerSettings]:
    """``backend: swarm`` settings with a per-test instance label; afterwards no service with it
    may remain."""
    instance = f"{session_containers.prefix}{uuid.uuid4().hex[:10]}"
    yield DockerSettings(backend="swarm", instance=instance, allowed_host_paths=(str(tmp_path),), stop_grace="2s")
    leftovers = services_of(docker_client, instance)
    for service in leftovers:
        docker_client.api.remove_service(service["ID"])
    assert not leftovers, f"services left behind: {[s['Spec']['Name'] for s in leftovers]}"
