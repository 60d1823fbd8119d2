"""Container jobs as Swarm services on a real single-node swarm: exit codes, live output,
timeouts, placement, the service spec as the engine holds it, and orphan cleanup."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from container_helpers import (
    TEST_IMAGE,
    RecordingLog,
    cli,
    container_job,
    make_ctx,
    orphan_service,
    services_of,
    task_containers,
)
from polling import wait_for

from scheduler.kinds.container import execute
from scheduler.kinds.container.run import ContainerFailed, ContainerTimedOut
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_JOB, LABEL_MANAGED_BY, LABEL_RUN_ID
from scheduler.kinds.container.swarm_run import SwarmStartTimedOut, cleanup_services

pytestmark = pytest.mark.docker


@contextmanager
def in_background(fn: Callable[[], Any]) -> Iterator[Future]:
    """Run ``fn`` (an ``execute`` call) in a thread while the test looks at the engine."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(fn)


def the_service(client: Any, settings: DockerSettings) -> dict[str, Any]:
    """The one service of this test's instance, once it exists."""
    return wait_for(lambda: services_of(client, settings.instance), what="the run's service")[0]


def test_exit_zero_succeeds_relays_output_and_removes_the_service(docker_client, swarm_settings,
                                                                  tmp_path: Path) -> None:
    log = RecordingLog()
    result = execute(container_job(command=["sh", "-c", "echo hello; echo warn >&2"]),
                     make_ctx(tmp_path, log=log, docker=swarm_settings))  # fmt: skip
    assert result["exit_code"] == 0 and result["image"] == TEST_IMAGE
    assert sorted(log.output()) == [("stderr", "warn"), ("stdout", "hello")]
    assert services_of(docker_client, swarm_settings.instance) == []
    # The exited task's container goes too (removing a job service alone would leave it behind).
    wait_for(lambda: not task_containers(docker_client, result["service_id"]), what="the task's container to go")


def test_a_failing_task_runs_exactly_once_and_fails_with_its_exit_code(docker_client, swarm_settings,
                                                                       tmp_path: Path) -> None:
    spec = container_job(command=["sh", "-c", "echo ran >> /probe/runs; echo failing >&2; exit 3"],
                         volumes=[f"{tmp_path}:/probe"])  # fmt: skip
    log = RecordingLog()
    with in_background(lambda: execute(spec, make_ctx(tmp_path, log=log, docker=swarm_settings))) as run:
        service = the_service(docker_client, swarm_settings)
        with pytest.raises(ContainerFailed, match="^container exited with code 3$") as info:
            run.result(timeout=60)
    assert info.value.container_exit_code == 3
    assert service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert (tmp_path / "runs").read_text() == "ran\n"  # one task, never restarted by Swarm
    assert log.output() == [("stderr", "failing")]
    assert services_of(docker_client, swarm_settings.instance) == []


def test_output_is_relayed_live_in_order_and_complete(swarm_settings, tmp_path: Path) -> None:
    # The task waits until the test has seen its first line in the run's log: only live relaying
    # lets it go on.  Its last line has no newline and must still arrive, once.
    script = ("echo one; while [ ! -e /probe/go ]; do sleep 0.1; done; echo two >&2; printf 'thr'; sleep 0.2; "
              "echo ee; printf 'no newline'")  # fmt: skip
    spec = container_job(command=["sh", "-c", script], volumes=[f"{tmp_path}:/probe"], timeout="60s")
    log = RecordingLog()
    with in_background(lambda: execute(spec, make_ctx(tmp_path, log=log, docker=swarm_settings))) as run:
        wait_for(lambda: "one" in log.lines(), timeout=60, what="the first line, live")
        (tmp_path / "go").touch()
        assert run.result(timeout=60)["exit_code"] == 0
    assert log.output() == [("stdout", "one"), ("stderr", "two"), ("stdout", "three"), ("stdout", "no newline")]


def test_timeout_removes_the_service_and_its_container(docker_client, swarm_settings, tmp_path: Path) -> None:
    # PID 1 without a handler ignores SIGTERM: only the kill after the stop grace ends it.
    spec = container_job(command=["sh", "-c", "echo ready; exec sleep 600"], timeout="3s", kill_grace="3s")
    log = RecordingLog()
    with in_background(lambda: execute(spec, make_ctx(tmp_path, log=log, docker=swarm_settings))) as run:
        service = the_service(docker_client, swarm_settings)
        with pytest.raises(ContainerTimedOut, match="^container timed out after 3s; service removed$"):
            run.result(timeout=60)
    assert log.lines() == ["ready"]
    assert services_of(docker_client, swarm_settings.instance) == []
    wait_for(lambda: not task_containers(docker_client, service["ID"]), what="the task's container to go")


def test_an_unsatisfiable_constraint_fails_after_start_timeout_with_swarms_reason(docker_client, swarm_settings,
                                                                                   tmp_path: Path) -> None:
    spec = container_job(command=["true"], placement={"constraints": ["node.labels.nosuch==x"]}, start_timeout="2s")
    with pytest.raises(SwarmStartTimedOut) as info:
        execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=swarm_settings))
    assert str(info.value) == ("not started within start_timeout 2s: no suitable node (scheduling constraints "
                               "not satisfied on 1 node) (task pending)")  # fmt: skip
    assert services_of(docker_client, swarm_settings.instance) == []


def test_gpus_are_reserved_as_the_clis_generic_resource(docker_client, swarm_settings, tmp_path: Path) -> None:
    # No node here advertises NVIDIA-GPU: the task stays pending and the run fails with Swarm's reason.
    spec = container_job(command=["true"], gpus=1, start_timeout="3s")
    with in_background(lambda: execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=swarm_settings))) as run:
        ours = the_service(docker_client, swarm_settings)["Spec"]["TaskTemplate"]["Resources"]["Reservations"]
        cli_id = cli(swarm_settings, "service", "create", "--detach", "--quiet", "--mode", "replicated-job",
                     "--restart-condition", "none", "--no-resolve-image", "--generic-resource", "NVIDIA-GPU=1",
                     "--label", f"{LABEL_MANAGED_BY}=scheduler",
                     "--label", f"{LABEL_INSTANCE}={swarm_settings.instance}",
                     TEST_IMAGE, "true")  # fmt: skip
        try:
            theirs = docker_client.api.inspect_service(cli_id)["Spec"]["TaskTemplate"]["Resources"]["Reservations"]
        finally:
            docker_client.api.remove_service(cli_id)
        assert ours["GenericResources"] == theirs["GenericResources"]
        with pytest.raises(SwarmStartTimedOut, match=r"no suitable node \(insufficient resources on 1 node\)"):
            run.result(timeout=60)


def test_placement_on_a_node_label(docker_client, swarm, swarm_settings, tmp_path: Path) -> None:
    key = f"sched-test-{uuid.uuid4().hex[:8]}"
    cli(swarm_settings, "node", "update", "--label-add", f"{key}=yes", swarm)
    try:
        spec = container_job(command=["true"], start_timeout="60s", placement={
            "constraints": [f"node.labels.{key}==yes"], "preferences": [f"spread=node.labels.{key}"]})  # fmt: skip
        result = execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=swarm_settings))
    finally:
        cli(swarm_settings, "node", "update", "--label-rm", key, swarm)
    assert result["exit_code"] == 0 and result["node_id"] == swarm


def test_resources_env_user_and_mounts_are_in_the_service_spec(docker_client, swarm_settings, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the task runs as nobody: it must see /probe/go
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    script = ("id -u; echo \"$GREETING\"; ls /sys/class/net; ip route | grep -c default; "
              "echo written > /data/out.txt; while [ ! -e /probe/go ]; do sleep 0.1; done")  # fmt: skip
    spec = container_job(
        command=["sh", "-c", script], user="65534:65534", env={"GREETING": "hi {logical_date}"},
        memory="64m", cpus=0.5, pids_limit=64, shm_size="16m", reservations={"memory": "32m", "cpus": 0.25},
        data_mount="/data", volumes=[f"{tmp_path}:/probe:ro"], capabilities=["CHOWN"], labels={"team": "ml"},
        timeout="60s",
    )  # fmt: skip
    log = RecordingLog()
    with in_background(lambda: execute(spec, make_ctx(data, job="spec_job", run_id=77, log=log,
                                                      docker=swarm_settings))) as run:  # fmt: skip
        service = docker_client.api.inspect_service(the_service(docker_client, swarm_settings)["ID"])
        (tmp_path / "go").touch()
        assert run.result(timeout=60)["exit_code"] == 0
    spec_ = service["Spec"]
    assert spec_["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert spec_["Labels"] == {"team": "ml", LABEL_MANAGED_BY: "scheduler", LABEL_JOB: "spec_job", LABEL_RUN_ID: "77",
                               LABEL_INSTANCE: swarm_settings.instance}  # fmt: skip
    template = spec_["TaskTemplate"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert template["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 1024**2, "Pids": 64},
        "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 32 * 1024**2},
    }
    container = template["ContainerSpec"]
    assert container["Image"] == TEST_IMAGE  # no digest: nothing asked a registry
    assert container["User"] == "65534:65534"
    assert "GREETING=hi 2026-11-05" in container["Env"] and "SCHEDULER_RUN_ID=77" in container["Env"]
    assert container["Mounts"] == [
        {"Type": "bind", "Source": str(data.resolve()), "Target": "/data"},
        {"Type": "bind", "Source": str(tmp_path), "Target": "/probe", "ReadOnly": True},
        {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 16 * 1024**2}},
    ]
    assert container["CapabilityDrop"] == ["ALL"] and container["CapabilityAdd"] == ["CHOWN"]
    # Network 'none' on Swarm: the internal isolated network, which has no gateway.
    network = docker_client.api.inspect_network(template["Networks"][0]["Target"])
    assert network["Name"] == swarm_settings.isolated_network and network["Internal"] is True
    assert log.lines() == ["65534", "hi 2026-11-05", "eth0", "lo", "0"]
    assert (data / "out.txt").read_text() == "written\n"


def test_forbidden_keys_are_refused_before_any_api_call(tmp_path: Path) -> None:
    from scheduler.errors import ConfigError

    def factory(settings: DockerSettings) -> Any:
        raise AssertionError("no client may be created for a refused job")

    settings = DockerSettings(backend="swarm")
    with pytest.raises(ConfigError, match="gpus: with docker.backend: swarm GPUs are reserved by count"):
        execute(container_job(command=["true"], gpus="all"), make_ctx(tmp_path, docker=settings),
                client_factory=factory)
    with pytest.raises(ConfigError, match="host path '/etc' is not under docker.allowed_host_paths"):
        execute(container_job(volumes=["/etc:/host-etc"]), make_ctx(tmp_path, docker=settings), client_factory=factory)


def test_cleanup_removes_only_this_instances_services(docker_client, swarm_settings) -> None:
    sid = orphan_service(swarm_settings, "train", 41)
    other = swarm_settings.model_copy(update={"instance": swarm_settings.instance + "-other"})
    assert cleanup_services(other) == []  # another scheduler's services are not ours
    assert [s["ID"] for s in services_of(docker_client, swarm_settings.instance)] == [sid]
    wait_for(lambda: any(t["Status"]["State"] == "running"
                           for t in docker_client.api.tasks(filters={"service": sid})),
               what="the orphan's task to run")  # fmt: skip
    assert cleanup_services(swarm_settings, grace=1) == [("train", 41)]
    assert services_of(docker_client, swarm_settings.instance) == []
    # Removing a job service alone would leave its task running: it must be gone as well.
    wait_for(lambda: not task_containers(docker_client, sid), what="the orphan's container to go")


def test_the_engine_address_comes_from_the_settings_as_for_containers(swarm_settings, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The same client construction as the engine backend: docker.host wins over DOCKER_HOST.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    log = RecordingLog()
    local = swarm_settings.model_copy(update={"host": "unix:///var/run/docker.sock"})
    result = execute(container_job(command=["echo", "via docker.host"]), make_ctx(tmp_path, log=log, docker=local))
    assert result["exit_code"] == 0
    assert log.lines() == ["via docker.host"]
    from scheduler.kinds.container.engine import EngineUnavailable

    with pytest.raises(EngineUnavailable, match="cannot reach the Docker engine at unix:///nonexistent/docker.sock"):
        execute(container_job(command=["true"]), make_ctx(tmp_path, docker=swarm_settings))
