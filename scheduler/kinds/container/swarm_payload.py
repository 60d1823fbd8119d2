"""The Swarm service-create request of one run, built field by field from an allowlist.

Each run is one service in ``replicated-job`` mode (one task, run to completion) with restart
condition ``none``: whether a failed run is tried again is the scheduler's decision (``retries``),
not Swarm's, which would otherwise start the task again and run the job twice.  The spec uses the
Engine API's own names, so what is built here is what ``docker service inspect`` shows back, and
:func:`build_service_request` asserts that nothing outside the allowlists is present.

The image reference goes in as written: nothing here (nor the SDK's ``create_service``) asks a
registry for a digest, which is what the docker CLI's ``--no-resolve-image`` turns off.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from scheduler.kinds.container.payload import RunFacts, environment, labels_for, mounts, render
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import ContainerJob

# Keyword arguments of docker's APIClient.create_service that we ever pass.
SERVICE_FIELDS = frozenset({"task_template", "name", "labels", "mode"})
TASK_TEMPLATE_FIELDS = frozenset({"ContainerSpec", "Resources", "RestartPolicy", "Placement", "Networks"})
CONTAINER_SPEC_FIELDS = frozenset(
    {"Image", "Command", "Args", "Env", "Dir", "User", "Labels", "Mounts", "StopGracePeriod",
     "CapabilityDrop", "CapabilityAdd", "Privileges", "Init", "ReadOnly"}
)  # fmt: skip

# A service name is a DNS label: letters, digits and '-', at most 63 characters.
_SERVICE_UNSAFE = re.compile(r"[^a-zA-Z0-9-]+")


def service_name(job: str, run_id: int, attempt: int) -> str:
    """Readable in ``docker service ls`` and unique even when a run id is reused after a state reset."""
    safe = _SERVICE_UNSAFE.sub("-", job).strip("-")[:30].strip("-") or "job"
    return f"sched-{safe}-{run_id}-{attempt}-{secrets.token_hex(3)}"


def _nanos(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def swarm_mounts(spec: ContainerJob, settings: DockerSettings, facts: RunFacts) -> list[dict[str, Any]]:
    """Bind mounts for host paths (the path must exist on whichever node runs the task), volume
    mounts for names (on several nodes the volume must be shared storage), a tmpfs for ``shm_size``."""
    out: list[dict[str, Any]] = [
        {"Type": "bind" if source.startswith("/") else "volume", "Source": source, "Target": target, "ReadOnly": ro}
        for source, target, ro in mounts(spec, settings, facts)
    ]
    limits = spec.effective_limits(settings.defaults)
    if limits.shm_size:
        # Swarm has no ShmSize: a tmpfs of that size at /dev/shm is what the engine would give.
        out.append({"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": limits.shm_size}})
    return out


def resources(spec: ContainerJob, settings: DockerSettings) -> dict[str, Any]:
    """Limits (enforced in the container) and reservations (what the scheduler of Swarm needs free
    on a node to place the task there); GPUs are reserved as a discrete generic resource."""
    limits = spec.effective_limits(settings.defaults)
    limit = {
        "NanoCPUs": _nanos(limits.cpus) if limits.cpus else None,
        "MemoryBytes": limits.memory,
        "Pids": limits.pids_limit,
    }
    reserve = spec.reservations
    reservation: dict[str, Any] = {
        "NanoCPUs": _nanos(reserve.cpus) if reserve and reserve.cpus else None,
        "MemoryBytes": reserve.memory if reserve else None,
    }
    if isinstance(spec.gpus, int):  # the loader refuses 'all' and device ids under swarm
        reservation["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": settings.gpu_resource, "Value": spec.gpus}}
        ]
    return {
        "Limits": {k: v for k, v in limit.items() if v is not None},
        "Reservations": {k: v for k, v in reservation.items() if v is not None},
    }


def placement(spec: ContainerJob) -> dict[str, Any] | None:
    if spec.placement is None:
        return None
    prefs = [{"Spread": {"SpreadDescriptor": p.partition("=")[2]}} for p in spec.placement.preferences]
    out = {"Constraints": list(spec.placement.constraints) or None, "Preferences": prefs or None}
    return {k: v for k, v in out.items() if v is not None} or None


def stop_grace_seconds(spec: ContainerJob) -> int:
    """Seconds between Swarm's SIGTERM and SIGKILL when the service is removed (timeout, stop):
    the job's ``kill_grace`` less a margin, as the engine backend stops its containers."""
    return max(0, int(spec.kill_grace.total_seconds()) - 2)


def build_service_request(
    spec: ContainerJob,
    settings: DockerSettings,
    facts: RunFacts,
    *,
    network: str,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_service``.  ``network`` is the id (or name) of the
    swarm network the task joins (for network ``none``: the internal isolated network).  The
    caller has already run ``check_against_settings``."""
    environ = os.environ if environ is None else environ
    variables = facts.template_vars
    labels = labels_for(settings, facts.job, facts.run_id, spec.labels)
    container: dict[str, Any] = {
        "Image": spec.image,
        # Swarm's Command is the entrypoint and Args the command; [""] clears the image's entrypoint.
        "Command": (list(spec.entrypoint) or [""]) if spec.entrypoint is not None else None,
        "Args": [render(a, variables) for a in spec.command] if spec.command is not None else None,
        "Env": environment(spec, facts, spec.data_target, environ),
        "Dir": spec.working_dir,
        "User": spec.user,
        # Ours on the task's container too: an ended task's container stays on its node after
        # the service is gone (Engine 20.10), and these labels let it be found and pruned.
        "Labels": labels,
        "Mounts": swarm_mounts(spec, settings, facts) or None,
        "StopGracePeriod": _nanos(stop_grace_seconds(spec)),
        # Fixed security posture: not configurable by a job (Swarm has no privileged mode and
        # no host namespaces to ask for).
        "CapabilityDrop": ["ALL"],
        "CapabilityAdd": sorted(spec.capabilities) or None,
        # Honoured by engines with API 1.44+; older ones drop it (daemon.json no-new-privileges).
        "Privileges": {"NoNewPrivileges": True},
        "Init": False,
        "ReadOnly": False,
    }
    container = {k: v for k, v in container.items() if v is not None}
    task_template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": resources(spec, settings),
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": placement(spec),
        "Networks": [{"Target": network}],
    }
    task_template = {k: v for k, v in task_template.items() if v is not None}
    request: dict[str, Any] = {
        "task_template": task_template,
        "name": service_name(facts.job, facts.run_id, facts.attempt),
        "labels": labels,
        # One task, run to completion; the SDK's ServiceMode("replicated-job") says the same.
        "mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }
    unexpected = (
        (set(request) - SERVICE_FIELDS)
        | (set(task_template) - TASK_TEMPLATE_FIELDS)
        | (set(container) - CONTAINER_SPEC_FIELDS)
    )
    assert not unexpected, f"service request fields outside the allowlist: {sorted(unexpected)}"
    return request
