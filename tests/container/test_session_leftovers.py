"""A container left by a test session fails that session's run when it ends, whatever the test order,
and only containers of that session are reported (and removed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from container_helpers import REPO_ROOT, TEST_IMAGE

from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_MANAGED_BY

pytestmark = pytest.mark.docker

HELPER = Path(__file__).with_name("leaves_a_container.py")


def test_a_leftover_container_fails_the_session_that_left_it(docker_client: Any, settings: DockerSettings) -> None:
    # A container of this (outer) session, alive while the inner session ends: not the inner one's.
    labels = {LABEL_MANAGED_BY: "scheduler", LABEL_INSTANCE: settings.instance}
    bystander = docker_client.api.create_container(TEST_IMAGE, ["true"], labels=labels)["Id"]
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(HELPER)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, out
        assert "1 passed, 1 error" in out, out
        assert "left on the engine at the end of this test session: container " in out, out
        assert "left-behind" in out and settings.instance not in out, out
        [left] = re.findall(r"left behind: ([0-9a-f]{64})", out)
        with pytest.raises(docker.errors.NotFound):  # removed after being reported
            docker_client.api.inspect_container(left)
        assert docker_client.api.inspect_container(bystander)["Id"] == bystander  # another session's: kept
    finally:
        docker_client.api.remove_container(bystander, force=True)
