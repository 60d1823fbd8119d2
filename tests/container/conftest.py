"""Fixtures for container-kind tests against a real Docker engine.

Without a reachable engine the ``docker`` tests are skipped, except under ``CI=true``, where a
missing engine is a failure: CI starts one (``.ci/docker-up.sh``), so its absence is a bug.
Every test gets its own ``instance`` label, and afterwards no container with it may remain.  The
labels of one session share a prefix, so when the session ends :func:`session_containers` can
check that nothing of *this* session is left, while other sessions use the same engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from container_helpers import ensure_test_image, no_engine, session_leftovers

from scheduler.kinds.container.spec import LABEL_INSTANCE, DockerSettings


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
    finally:
        client.close()
    if leftovers:
        found = sorted(f"{c['Names'][0].lstrip('/')} (instance {c['Labels'][LABEL_INSTANCE]})" for c in leftovers)
        pytest.fail(f"containers of this test session left on the engine at its end: {', '.join(found)}",
                    pytrace=False)


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


