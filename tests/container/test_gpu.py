"""GPUs: the device requests equal the docker CLI's; on a GPU host the job's container sees the
device, and on a host without a GPU runtime the policy decides (clear failure or CPU fallback).

Which of the two a host is, is decided once (:func:`gpu_host`), never by skipping: both kinds of
host run real assertions on the same tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from container_helpers import TEST_IMAGE, RecordingLog, container_job, docker_cli, make_ctx

from scheduler.kinds.container import execute
from scheduler.kinds.container.engine import resolve_host
from scheduler.kinds.container.payload import RunFacts, build_create_request
from scheduler.kinds.container.run import GpuUnavailable
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_MANAGED_BY

pytestmark = pytest.mark.docker


# Lists the NVIDIA device nodes the container was given; exits 1 when it has none.
SEES_GPU = ["sh", "-c", "ls /dev/nvidia[0-9]* || { echo no GPU device; exit 1; }"]


def has_gpu_runtime(client: Any) -> bool:
    """The engine can hand GPUs to containers: an ``nvidia`` runtime, or the NVIDIA container
    toolkit's hook (which serves ``--gpus`` without a runtime of its own) on this host."""
    runtimes = client.info().get("Runtimes") or {}
    return "nvidia" in runtimes or any(shutil.which(t) for t in ("nvidia-container-runtime-hook", "nvidia-ctk"))


@pytest.fixture(scope="module")
def gpu_host(docker_client: Any) -> bool:
    """Whether this host's engine provides GPUs.  ``SCHEDULER_TEST_GPU=1`` or ``0`` states it
    explicitly (a GPU CI runner sets 1, so a broken toolkit fails instead of passing as CPU-only)."""
    stated = os.environ.get("SCHEDULER_TEST_GPU", "")
    if stated in ("1", "0"):
        return stated == "1"
    return has_gpu_runtime(docker_client)


@pytest.mark.parametrize(("gpus", "cli_flag"), [("all", "all"), (2, "2"), (["0", "1"], '"device=0,1"')])
def test_device_requests_equal_the_clis(docker_client, settings: DockerSettings, tmp_path: Path, gpus,
                                        cli_flag) -> None:
    spec = container_job(command=["true"], gpus=gpus)
    request = build_create_request(spec, settings, RunFacts("gpu_job", 1, 1, tmp_path, {}), environ={})
    ours_id = docker_client.api.create_container(**request)["Id"]
    cli_id = subprocess.run(
        [docker_cli(), "-H", resolve_host(settings), "create", "--gpus", cli_flag,
         "--label", f"{LABEL_MANAGED_BY}=scheduler", "--label", f"{LABEL_INSTANCE}={settings.instance}",
         TEST_IMAGE, "true"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        sent = docker_client.api.inspect_container(ours_id)["HostConfig"]["DeviceRequests"]
        expected = docker_client.api.inspect_container(cli_id)["HostConfig"]["DeviceRequests"]
        assert sent == expected
        assert sent and sent[0]["Capabilities"] == [["gpu"]]
    finally:
        for cid in (ours_id, cli_id):
            docker_client.api.remove_container(cid, force=True)


def test_required_gpu(docker_client, settings, tmp_path: Path, gpu_host: bool) -> None:
    spec = container_job(command=SEES_GPU, gpus="all", gpu_policy="required")
    log = RecordingLog()
    if gpu_host:  # the container runs with the device
        result = execute(spec, make_ctx(tmp_path, log=log, docker=settings))
        assert result["exit_code"] == 0 and result["gpu_fallback"] is False
        assert log.lines() and all(line.startswith("/dev/nvidia") for line in log.lines()), log.lines()
        return
    expected = "^GPU required but the Docker engine cannot provide one: could not select device driver"
    with pytest.raises(GpuUnavailable, match=expected):
        execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    assert log.lines() == []  # it never ran


def test_preferred_gpu(docker_client, settings, tmp_path: Path, gpu_host: bool) -> None:
    spec = container_job(command=["sh", "-c", "ls /dev/nvidia[0-9]* 2>/dev/null || echo trained on cpu"], gpus=1,
                         gpu_policy="preferred")  # fmt: skip
    log = RecordingLog()
    result = execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    warnings = [event for _, level, event, _ in log.records if level == "warning"]
    assert result["exit_code"] == 0
    if gpu_host:  # one device, no fallback, no warning
        assert result["gpu_fallback"] is False and "warning" not in result
        assert len(log.lines()) == 1 and log.lines()[0].startswith("/dev/nvidia"), log.lines()
        assert not any("no GPU available" in w for w in warnings)
        return
    assert result["gpu_fallback"] is True
    assert "without GPU" in result["warning"]
    assert log.lines() == ["trained on cpu"]
    assert any("no GPU available" in w for w in warnings)
