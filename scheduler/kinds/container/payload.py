"""The container-create request, built field by field from an allowlist.

Nothing of the job spec is forwarded wholesale: each Engine API field is set here on purpose, the
security fields are constants, and :func:`build_create_request` asserts that no field outside
``CREATE_FIELDS``/``HOST_CONFIG_FIELDS`` is present.  ``HostConfig`` uses the Engine API's own
names, so what is built here is exactly what the engine receives (and what a test can compare with
``docker inspect``).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import (
    LABEL_INSTANCE,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    MANAGED_BY,
    ContainerJob,
)

# Keyword arguments of docker's APIClient.create_container that we ever pass.
CREATE_FIELDS = frozenset(
    {"image", "command", "entrypoint", "environment", "working_dir", "user", "labels", "name",
     "host_config", "detach", "use_config_proxy"}
)  # fmt: skip

# Engine API HostConfig fields that we ever send.
HOST_CONFIG_FIELDS = frozenset(
    {"Binds", "NetworkMode", "Memory", "MemorySwap", "NanoCpus", "PidsLimit", "ShmSize", "CapDrop",
     "CapAdd", "SecurityOpt", "Privileged", "IpcMode", "PidMode", "UTSMode", "UsernsMode",
     "PublishAllPorts", "ReadonlyRootfs", "AutoRemove", "DeviceRequests", "OomKillDisable"}
)  # fmt: skip

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class RunFacts:
    """What the payload needs to know about the run (a subset of ``RunContext``)."""

    job: str
    run_id: int
    attempt: int
    data_dir: Path
    template_vars: Mapping[str, str]


def gpu_device_requests(gpus: str | int | tuple[str, ...] | None) -> list[dict[str, Any]] | None:
    """``DeviceRequests`` exactly as ``docker create --gpus ...`` sends them.

    ``all`` -> Count -1; ``N`` -> Count N; ``[ids]`` -> DeviceIDs with Count 0.  DeviceIDs is null
    (not ``[]``) when no ids are given, as the CLI leaves it.
    """
    if gpus is None:
        return None
    request: dict[str, Any] = {"Driver": "", "Count": 0, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
    if gpus == "all":
        request["Count"] = -1
    elif isinstance(gpus, int):
        request["Count"] = gpus
    else:
        request["DeviceIDs"] = list(gpus)
    return [request]


def render(value: str, variables: Mapping[str, str]) -> str:
    """Fill ``{logical_date}``-style placeholders; unknown braces (``${HOME}``) stay as written."""
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), value)


def container_name(job: str, run_id: int, attempt: int) -> str:
    """Readable in ``docker ps`` and unique even when a run id is reused after a state reset."""
    safe = _NAME_UNSAFE.sub("-", job).strip("-.") or "job"
    return f"sched-{safe[:60]}-{run_id}-{attempt}-{secrets.token_hex(3)}"


def labels_for(
    settings: DockerSettings, job: str, run_id: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    labels = dict(extra or {})
    labels.update(
        {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: job, LABEL_RUN_ID: str(run_id), LABEL_INSTANCE: settings.instance}
    )
    return labels


def environment(spec: ContainerJob, facts: RunFacts, data_target: str, environ: Mapping[str, str]) -> list[str]:
    """Run facts, then ``pass_env`` names copied from the scheduler, then the job's ``env``."""
    env: dict[str, str] = {
        "SCHEDULER_JOB": facts.job,
        "SCHEDULER_RUN_ID": str(facts.run_id),
        "SCHEDULER_ATTEMPT": str(facts.attempt),
    }
    for key in ("logical_date", "data_interval_start", "data_interval_end"):
        if key in facts.template_vars:
            env[f"SCHEDULER_{key.upper()}"] = facts.template_vars[key]
    if data_target:
        env["SCHEDULER_DATA_DIR"] = data_target
    for name in spec.pass_env:
        if name in environ:
            env[name] = environ[name]
    env.update({k: render(v, facts.template_vars) for k, v in spec.env.items()})
    return [f"{k}={v}" for k, v in env.items()]


def mounts(spec: ContainerJob, settings: DockerSettings, facts: RunFacts) -> list[tuple[str, str, bool]]:
    """``(source, target, read_only)`` of every mount: the data volume first, then ``volumes``."""
    out = []
    if spec.data_mount:
        # On the engine's host the data dir is either a named volume or a host path; when the
        # scheduler itself runs in a container, docker.data_volume (or the job's) must say which.
        source = spec.data_volume or settings.data_volume or str(facts.data_dir.resolve())
        out.append((source, spec.data_target, spec.data_read_only))
    out.extend((vol.source, vol.target, vol.read_only) for vol in spec.volumes)
    return out


def binds(spec: ContainerJob, settings: DockerSettings, facts: RunFacts) -> list[str]:
    return [f"{source}:{target}:{'ro' if ro else 'rw'}" for source, target, ro in mounts(spec, settings, facts)]


def build_create_request(
    spec: ContainerJob,
    settings: DockerSettings,
    facts: RunFacts,
    *,
    with_gpus: bool = True,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container``; the caller has already run
    ``check_against_settings`` (the loader did, and ``execute`` does again)."""
    environ = os.environ if environ is None else environ
    limits = spec.effective_limits(settings.defaults)
    host_config: dict[str, Any] = {
        # Fixed security posture: not configurable by a job.
        "Privileged": False,
        "CapDrop": ["ALL"],
        "CapAdd": sorted(spec.capabilities) or None,
        "SecurityOpt": ["no-new-privileges"],
        "IpcMode": "private",
        "PidMode": "",
        "UTSMode": "",
        "UsernsMode": "",
        "PublishAllPorts": False,
        "OomKillDisable": False,
        # Removed by us after the logs and the exit state are collected, never by the engine.
        "AutoRemove": False,
        "NetworkMode": spec.network or settings.network,
        "Binds": binds(spec, settings, facts) or None,
        "Memory": limits.memory,
        # Equal to Memory: no swap, so a memory limit ends in an OOM kill rather than thrashing.
        "MemorySwap": limits.memory,
        "NanoCpus": int(limits.cpus * 1e9) if limits.cpus else None,
        "PidsLimit": limits.pids_limit,
        "ShmSize": limits.shm_size,
        "DeviceRequests": gpu_device_requests(spec.gpus) if with_gpus else None,
    }
    host_config = {k: v for k, v in host_config.items() if v is not None}
    variables = facts.template_vars
    request: dict[str, Any] = {
        "image": spec.image,
        "command": [render(a, variables) for a in spec.command] if spec.command is not None else None,
        # An empty list clears the image's entrypoint; the engine reads [] as "unset", [""] as empty.
        "entrypoint": (list(spec.entrypoint) or [""]) if spec.entrypoint is not None else None,
        "environment": environment(spec, facts, spec.data_target, environ),
        "working_dir": spec.working_dir,
        "user": spec.user,
        "labels": labels_for(settings, facts.job, facts.run_id, spec.labels),
        "name": container_name(facts.job, facts.run_id, facts.attempt),
        "host_config": host_config,
        "detach": True,
        # The SDK would otherwise copy proxy variables from ~/.docker/config.json into the env.
        "use_config_proxy": False,
    }
    request = {k: v for k, v in request.items() if v is not None}
    unexpected = (set(request) - CREATE_FIELDS) | (set(host_config) - HOST_CONFIG_FIELDS)
    assert not unexpected, f"create request fields outside the allowlist: {sorted(unexpected)}"
    return request
