"""Fixtures for container-kind tests against a real Docker engine.

Without a reachable engine the ``docker`` tests are skipped, except under ``CI=true``, where a
missing engine is a failure: CI starts one (``.ci/docker-up.sh``), so its absence is a bug.
Every test gets its own ``instance`` label, and afterwards no container with it may remain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from container_helpers import all_ours, ensure_test_image, no_engine

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


