"""The container spec, the allowlist checks and the create payload: no engine needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scheduler.kinds.container.payload import (
    CREATE_FIELDS,
    HOST_CONFIG_FIELDS,
    RunFacts,
    build_create_request,
    gpu_device_requests,
    render,
)
from scheduler.kinds.container.settings import DockerSettings, check_against_settings
from scheduler.kinds.container.spec import ContainerJob, format_size, image_allowed, parse_size


def job(**fields: object) -> ContainerJob:
    return ContainerJob.model_validate({"kind": "container", "image": "busybox:1.36", **fields})


def facts(tmp_path: Path) -> RunFacts:
    return RunFacts("train", 7, 1, tmp_path, {"logical_date": "2026-11-05", "job": "train", "run_id": "7"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"privileged": True}, "'privileged' is not allowed: containers never run privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "'cap_add' is not allowed"),
        ({"capabilities": ["SYS_ADMIN"]}, "capability 'SYS_ADMIN' is not allowed"),
        ({"network": "host"}, "network 'host' is not allowed"),
        ({"network": "container:db"}, "network 'container:db' is not allowed"),
        ({"network_mode": "host"}, "'network_mode' is not allowed"),
        ({"pid": "host"}, "'pid' is not allowed: the host PID namespace is never shared"),
        ({"ipc": "host"}, "'ipc' is not allowed"),
        ({"userns_mode": "host"}, "'userns_mode' is not allowed"),
        ({"devices": ["/dev/sda"]}, "'devices' is not allowed"),
        ({"security_opt": ["seccomp=unconfined"]}, "'security_opt' is not allowed"),
        ({"volumes": ["/etc/../root:/x"]}, "must not contain '..'"),
        ({"volumes": ["relative/path:/x"]}, "neither an absolute host path nor a volume name"),
        ({"labels": {"org.cron-scheduler.job": "other"}}, "is reserved"),
        ({"gpus": 0}, "at least 1"),
        ({"memory": "lots"}, "invalid size"),
    ],
)
def test_forbidden_or_invalid_fields_are_refused_with_one_clear_line(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        job(**fields)
    errors = info.value.errors()
    assert len(errors) == 1
    assert message in errors[0]["msg"]
    assert "\n" not in errors[0]["msg"]


def test_checks_against_global_settings() -> None:
    settings = DockerSettings(
        allowed_images=("registry.example.com/ml/*", "scheduler-*"),
        allowed_host_paths=("/srv/shared",),
        allowed_volumes=("models",),
    )
    ok = job(image="registry.example.com/ml/train@sha256:" + "a" * 64,
             volumes=["/srv/shared/x:/x:ro", "/srv/shared:/y", "models:/models"])  # fmt: skip
    assert check_against_settings(ok, settings) == []
    bad = job(image="busybox", volumes=["/srv/sharedother:/x", "/etc:/etc", "cache:/cache"])
    problems = dict(check_against_settings(bad, settings))
    assert problems["image"].startswith("image 'busybox' is not in docker.allowed_images")
    assert "not under docker.allowed_host_paths" in problems["volumes[0]"]
    assert "not under docker.allowed_host_paths" in problems["volumes[1]"]
    assert "not in docker.allowed_volumes" in problems["volumes[2]"]


@pytest.mark.parametrize(
    ("image", "pattern", "allowed"),
    [
        ("busybox", "busybox:latest", True),
        ("busybox", "docker.io/library/*", True),
        ("busybox:1.36", "busybox:latest", False),
        ("ghcr.io/acme/train:v1", "ghcr.io/acme/*", True),
        ("ghcr.io/evil/train:v1", "ghcr.io/acme/*", False),
        ("acme/train", "docker.io/acme/*", True),
    ],
)
def test_image_allowlist_globs(image: str, pattern: str, allowed: bool) -> None:
    assert image_allowed(image, (pattern,)) is allowed


def test_sizes_round_trip() -> None:
    assert parse_size("64m") == 64 * 1024**2
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size(4096) == 4096
    assert format_size(parse_size("64m")) == "64m"


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("all", {"Count": -1, "DeviceIDs": None}),
        (2, {"Count": 2, "DeviceIDs": None}),
        (["0", "1"], {"Count": 0, "DeviceIDs": ["0", "1"]}),
    ],
)
def test_gpu_device_requests_shape(gpus: object, expected: dict) -> None:
    spec = job(gpus=gpus)
    (request,) = gpu_device_requests(spec.gpus)  # type: ignore[misc]
    assert request == {"Driver": "", "Capabilities": [["gpu"]], "Options": {}, **expected}


def test_create_request_is_built_from_the_allowlist(tmp_path: Path) -> None:
    spec = job(
        command=["train", "--date", "{logical_date}", "${HOME}"],
        env={"MODE": "fast", "OUT": "/data/models/{logical_date}"},
        pass_env=["PRESENT", "ABSENT"],
        data_mount="/data",
        volumes=[f"{tmp_path}:/in:ro"],
        memory="256m",
        cpus=1.5,
        capabilities=["chown"],
        labels={"team": "ml"},
    )
    settings = DockerSettings(instance="ci", allowed_host_paths=(str(tmp_path),), defaults={"pids_limit": 128})
    request = build_create_request(spec, settings, facts(tmp_path), environ={"PRESENT": "p", "SECRET": "s"})
    assert set(request) <= CREATE_FIELDS
    hc = request["host_config"]
    assert set(hc) <= HOST_CONFIG_FIELDS
    assert hc["Privileged"] is False
    assert hc["CapDrop"] == ["ALL"] and hc["CapAdd"] == ["CHOWN"]
    assert hc["SecurityOpt"] == ["no-new-privileges"]
    assert hc["NetworkMode"] == "none" and hc["PidMode"] == "" and hc["IpcMode"] == "private"
    assert hc["Memory"] == hc["MemorySwap"] == 256 * 1024**2
    assert hc["NanoCpus"] == 1_500_000_000 and hc["PidsLimit"] == 128
    assert hc["Binds"] == [f"{tmp_path.resolve()}:/data:rw", f"{tmp_path}:/in:ro"]
    assert "DeviceRequests" not in hc
    assert request["command"] == ["train", "--date", "2026-11-05", "${HOME}"]
    env = dict(item.split("=", 1) for item in request["environment"])
    assert env["OUT"] == "/data/models/2026-11-05" and env["PRESENT"] == "p"
    assert "ABSENT" not in env and "SECRET" not in env
    assert env["SCHEDULER_JOB"] == "train" and env["SCHEDULER_DATA_DIR"] == "/data"
    assert request["labels"] == {
        "team": "ml",
        "org.cron-scheduler.managed-by": "scheduler",
        "org.cron-scheduler.job": "train",
        "org.cron-scheduler.run-id": "7",
        "org.cron-scheduler.instance": "ci",
    }
    assert request["use_config_proxy"] is False


def test_data_volume_setting_names_the_source(tmp_path: Path) -> None:
    spec = job(data_mount="/data:ro")
    request = build_create_request(spec, DockerSettings(data_volume="sales-data"), facts(tmp_path), environ={})
    assert request["host_config"]["Binds"] == ["sales-data:/data:ro"]


def test_render_leaves_unknown_braces() -> None:
    assert render("{logical_date}/{nope}/${X}", {"logical_date": "2026-11-05"}) == "2026-11-05/{nope}/${X}"


def test_spec_module_does_not_import_the_docker_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, scheduler.kinds.container.spec; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout  # fmt: skip
    assert out.strip() == "False"
