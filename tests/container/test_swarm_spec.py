"""The Swarm backend's config rules and service request: no engine needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from scheduler.config import load_config
from scheduler.config.loader import load_models
from scheduler.errors import ConfigError
from scheduler.kinds.container.payload import RunFacts
from scheduler.kinds.container.settings import DockerSettings, check_against_settings
from scheduler.kinds.container.spec import ContainerJob
from scheduler.kinds.container.swarm_payload import (
    CONTAINER_SPEC_FIELDS,
    TASK_TEMPLATE_FIELDS,
    build_service_request,
    service_name,
)

SWARM = DockerSettings(backend="swarm", instance="unit", allowed_host_paths=("/srv",), allowed_volumes=("models",))


def job(**fields: object) -> ContainerJob:
    return ContainerJob.model_validate({"kind": "container", "image": "scheduler-test-busybox:latest", **fields})


def facts(tmp_path: Path) -> RunFacts:
    return RunFacts("gpu_train", 7, 2, tmp_path, {"logical_date": "2026-11-05", "job": "gpu_train", "run_id": "7"})


def test_a_full_swarm_job_becomes_one_replicated_job_service(tmp_path: Path) -> None:
    spec = job(
        command=["train", "--date", "{logical_date}"], entrypoint=["/bin/sh", "-c"], env={"EPOCHS": "3"},
        user="1000:1000", working_dir="/work", memory="8g", cpus=4, pids_limit=512, shm_size="1g",
        reservations={"memory": "6g", "cpus": 2}, gpus=2, capabilities=["CHOWN"], labels={"team": "ml"},
        placement={"constraints": ["node.labels.gpu==true", "node.role != manager"],
                   "preferences": ["spread=node.labels.zone"]},
        volumes=["/srv/models:/models:ro", "models:/cache"], data_mount="/data",
        start_timeout="2m",
    )  # fmt: skip
    settings = SWARM.model_copy(update={"data_volume": "scheduler-data"})
    assert check_against_settings(spec, settings) == []
    request = build_service_request(spec, settings, facts(tmp_path), network="net-id", environ={})
    assert request["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    template = request["task_template"]
    # A retry is the scheduler's decision: Swarm must never start the task again.
    assert template["RestartPolicy"] == {"Condition": "none", "MaxAttempts": 0}
    assert template["Networks"] == [{"Target": "net-id"}]
    assert template["Placement"] == {
        "Constraints": ["node.labels.gpu==true", "node.role != manager"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }
    assert template["Resources"] == {
        "Limits": {"NanoCPUs": 4_000_000_000, "MemoryBytes": 8 * 1024**3, "Pids": 512},
        "Reservations": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 6 * 1024**3,
                         "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]},
    }  # fmt: skip
    container = template["ContainerSpec"]
    assert container["Image"] == "scheduler-test-busybox:latest"  # as written: no digest looked up
    assert container["Command"] == ["/bin/sh", "-c"] and container["Args"] == ["train", "--date", "2026-11-05"]
    assert container["User"] == "1000:1000" and container["Dir"] == "/work"
    assert "EPOCHS=3" in container["Env"] and "SCHEDULER_DATA_DIR=/data" in container["Env"]
    assert container["Mounts"] == [
        {"Type": "volume", "Source": "scheduler-data", "Target": "/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/srv/models", "Target": "/models", "ReadOnly": True},
        {"Type": "volume", "Source": "models", "Target": "/cache", "ReadOnly": False},
        {"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": 1024**3}},
    ]
    assert container["CapabilityDrop"] == ["ALL"] and container["CapabilityAdd"] == ["CHOWN"]
    assert container["Privileges"] == {"NoNewPrivileges": True}
    assert container["StopGracePeriod"] == 3_000_000_000  # kill_grace 5s less the 2s margin
    assert container["Labels"] == request["labels"] == {
        "team": "ml", "org.cron-scheduler.managed-by": "scheduler", "org.cron-scheduler.job": "gpu_train",
        "org.cron-scheduler.run-id": "7", "org.cron-scheduler.instance": "unit",
    }  # fmt: skip
    assert set(template) <= TASK_TEMPLATE_FIELDS and set(container) <= CONTAINER_SPEC_FIELDS


def test_a_job_can_name_its_data_volume(tmp_path: Path) -> None:
    spec = job(data_mount="/data:ro", data_volume="models")
    assert check_against_settings(spec, SWARM) == []
    request = build_service_request(spec, SWARM, facts(tmp_path), network="n", environ={})
    mounts = request["task_template"]["ContainerSpec"]["Mounts"]
    assert mounts == [{"Type": "volume", "Source": "models", "Target": "/data", "ReadOnly": True}]
    assert dict(check_against_settings(job(data_mount="/data", data_volume="other"), SWARM)) == {
        "data_volume": "volume 'other' is neither docker.data_volume nor in docker.allowed_volumes"
    }
    with pytest.raises(ValidationError, match="'data_volume' needs 'data_mount'"):
        job(data_volume="models")


def test_an_empty_entrypoint_clears_the_images(tmp_path: Path) -> None:
    container = build_service_request(job(entrypoint=[], command=["true"]), SWARM, facts(tmp_path), network="n",
                                      environ={})["task_template"]["ContainerSpec"]  # fmt: skip
    assert container["Command"] == [""] and container["Args"] == ["true"]


@pytest.mark.parametrize("name", ["gpu_train", "a.b_c", "x" * 200, "__"])
def test_service_names_are_dns_labels(name: str) -> None:
    made = service_name(name, 123456, 3)
    assert len(made) <= 63 and re.fullmatch(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?", made), made


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"pull": "always"}, "pull", "not supported with docker.backend: swarm"),
        ({"gpu_policy": "preferred"}, "gpu_policy", "there is no fallback"),
        ({"gpus": "all"}, "gpus", "GPUs are reserved by count, as the generic resource NVIDIA-GPU"),
        ({"gpus": ["0"]}, "gpus", "use a number"),
    ],
)
def test_engine_only_keys_are_refused_under_swarm(fields: dict, field: str, message: str) -> None:
    problems = dict(check_against_settings(job(**fields), SWARM))
    assert list(problems) == [field] and message in problems[field]
    assert check_against_settings(job(**fields), DockerSettings()) == []


@pytest.mark.parametrize(
    "fields",
    [{"placement": {"constraints": ["node.labels.gpu==true"]}}, {"reservations": {"memory": "1g"}},
     {"start_timeout": "1m"}],
)  # fmt: skip
def test_swarm_only_keys_are_refused_under_engine(fields: dict) -> None:
    (key,) = fields
    assert check_against_settings(job(**fields), DockerSettings()) == [(key, f"'{key}' needs docker.backend: swarm")]
    assert check_against_settings(job(**fields), SWARM) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"placement": {"constraints": ["node.labels.gpu"]}}, "invalid constraint"),
        ({"placement": {"preferences": ["binpack=node.id"]}}, "invalid placement preference"),
        ({"placement": {"nodes": ["a"]}}, "Extra inputs are not permitted"),
        ({"reservations": {"memory": "lots"}}, "invalid size"),
        ({"privileged": True}, "'privileged' is not allowed"),
        ({"pid": "host"}, "the host PID namespace is never shared"),
    ],
)
def test_invalid_or_forbidden_swarm_fields_fail_validation(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        job(**fields)


def test_loader_reports_backend_mismatches_with_file_line_job_and_field(write_config) -> None:
    path = write_config("""
        docker:
          backend: swarm
        jobs:
          train:
            kind: container
            image: busybox
            gpu_policy: preferred
          fine:
            kind: container
            image: busybox
            gpus: 1
            placement: {constraints: ["node.labels.gpu==true"]}
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:8: job 'train': gpu_policy: not supported with docker.backend: swarm (a task waits for a node "
        "with a free GPU; there is no fallback); remove it"
    ]
    path.write_text(path.read_text().replace("gpu_policy: preferred", "start_timeout: 30s"))
    models = load_models(path)
    assert models.docker.backend == "swarm"
    assert models.jobs["fine"].placement.constraints == ("node.labels.gpu==true",)
