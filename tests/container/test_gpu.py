"""GPUs: the device requests equal the docker CLI's, and a host without a GPU runtime is handled."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from container_helpers import TEST_IMAGE, RecordingLog, container_job, docker_cli, make_ctx

from scheduler.kinds.container import execute
from scheduler.kinds.container.engine import resolve_host
from scheduler.kinds.container.payload import RunFacts, build_create_request
from scheduler.kinds.container.run import GpuUnavailable
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_MANAGED_BY, DockerSettings

pytestmark = pytest.mark.docker


def has_gpu_runtime(client: Any) -> bool:
    return "nvidia" in (client.info().get("Runtimes") or {})


@pytest.mark.parametrize(("gpus", "cli_flag"), [("all", "all"), (2, "2"), (["0", "1"], '"device=0,1"')])
def test_device_requests_equal_the_clis(docker_client, settings: DockerSettings, tmp_path: Path, gpus, cli_flag) -> None:
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


def test_required_gpu_without_runtime_fails_clearly(docker_client, settings, tmp_path: Path) -> None:
    if has_gpu_runtime(docker_client):
        pytest.skip("this engine has a GPU runtime")
    spec = container_job(command=["echo", "should not run"], gpus="all", gpu_policy="required")
    log = RecordingLog()
    expected = "^GPU required but the Docker engine cannot provide one: could not select device driver"
    with pytest.raises(GpuUnavailable, match=expected):
        execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    assert log.lines() == []


def test_preferred_gpu_without_runtime_reruns_on_cpu_with_a_warning(docker_client, settings, tmp_path: Path) -> None:
    if has_gpu_runtime(docker_client):
        pytest.skip("this engine has a GPU runtime")
    spec = container_job(command=["echo", "trained on cpu"], gpus=1, gpu_policy="preferred")
    log = RecordingLog()
    result = execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    assert result["gpu_fallback"] is True and result["exit_code"] == 0
    assert "without GPU" in result["warning"]
    assert log.lines() == ["trained on cpu"]
    warnings = [event for _, level, event, _ in log.records if level == "warning"]
    assert any("no GPU available" in w for w in warnings)
