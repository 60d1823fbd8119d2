"""Collected last in this directory: after every container test, nothing of ours is on the engine.

(The ``docker_client`` fixture checks the same again when the whole session ends.)
"""

from __future__ import annotations

import pytest
from container_helpers import all_ours

pytestmark = pytest.mark.docker


def test_no_container_of_ours_is_left(docker_client) -> None:
    assert all_ours(docker_client) == []


def test_no_swarm_service_of_ours_is_left(docker_client, swarm) -> None:
    assert docker_client.api.services(filters={"label": "org.cron-scheduler.managed-by=scheduler"}) == []
