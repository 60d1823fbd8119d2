"""Not collected by default (no ``test_`` prefix): ``test_session_leftovers.py`` runs it in a pytest
session of its own, where it leaves a container of that session behind on purpose."""

from __future__ import annotations

from typing import Any

import pytest
from container_helpers import TEST_IMAGE

from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_MANAGED_BY

pytestmark = pytest.mark.docker


def test_leaves_a_container_behind(docker_client: Any, session_containers: Any) -> None:
    labels = {LABEL_MANAGED_BY: "scheduler", LABEL_INSTANCE: f"{session_containers.prefix}left-behind"}
    cid = docker_client.api.create_container(TEST_IMAGE, ["true"], labels=labels)["Id"]
    print(f"left behind: {cid}")
