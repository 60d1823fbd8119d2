"""Config models for the ``container`` kind (the global ``docker:`` section's are in ``settings``).

Security is decided here, at load time, before any call reaches an engine:

- keys that would widen a container's reach (``privileged``, ``cap_add``, ``pid: host``,
  ``network: host``, ``devices`` ...) are refused with a one-line reason instead of the generic
  "extra inputs are not permitted";
- capabilities: all are dropped; a job may keep a few by name, only from Docker's default set;
- host paths and named volumes, and images, are checked against the global allowlists by
  :func:`~scheduler.kinds.container.settings.check_against_settings`, which the config loader
  calls for every container job;
- so is the backend: keys only one of ``docker.backend: engine | swarm`` can honour are refused
  under the other (see ``swarm_spec``).

This module imports no Docker SDK: validating a config never needs an engine.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from scheduler.config.jobs import JobBase, argv_strings
from scheduler.config.sizes import SIZE_PATTERN, Size, format_size, parse_size  # noqa: F401 - re-exported
from scheduler.config.types import Duration, Model
from scheduler.kinds.container.allowlist import image_allowed  # noqa: F401 - re-exported
from scheduler.kinds.container.swarm_spec import Placement, Reservations

LABEL_PREFIX = "org.cron-scheduler."
LABEL_MANAGED_BY = LABEL_PREFIX + "managed-by"
LABEL_JOB = LABEL_PREFIX + "job"
LABEL_RUN_ID = LABEL_PREFIX + "run-id"
LABEL_INSTANCE = LABEL_PREFIX + "instance"
MANAGED_BY = "scheduler"

# Docker's default capability set: a job may keep these (all others are never granted).
DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip

# Keys people copy from `docker run` / compose that would widen a container's reach.  Each gets a
# reason, so the one line a user sees says why rather than "extra inputs are not permitted".
FORBIDDEN_KEYS: dict[str, str] = {
    "privileged": "containers never run privileged",
    "cap_add": "capabilities beyond Docker's defaults are never added; keep defaults with 'capabilities'",
    "cap_drop": "all capabilities are always dropped; keep some with 'capabilities'",
    "capabilities_add": "capabilities beyond Docker's defaults are never added",
    "security_opt": "security options are fixed (no-new-privileges, default seccomp/AppArmor)",
    "pid": "the host PID namespace is never shared",
    "pid_mode": "the host PID namespace is never shared",
    "ipc": "the host IPC namespace is never shared",
    "ipc_mode": "the host IPC namespace is never shared",
    "userns": "the user namespace is never changed",
    "userns_mode": "the user namespace is never changed",
    "uts": "the host UTS namespace is never shared",
    "uts_mode": "the host UTS namespace is never shared",
    "network_mode": "use 'network' with a named network or 'none'",
    "devices": "host devices are never passed in; GPUs go through 'gpus'",
    "device_requests": "use 'gpus'",
    "device_cgroup_rules": "host devices are never passed in",
    "sysctls": "kernel parameters are never changed",
    "volumes_from": "volumes are mounted only as listed in 'volumes'",
    "mounts": "use 'volumes' (host paths only from docker.allowed_host_paths)",
    "binds": "use 'volumes' (host paths only from docker.allowed_host_paths)",
    "runtime": "the runtime is the engine's default",
    "cgroup_parent": "the cgroup parent is the engine's default",
    "cgroupns": "the cgroup namespace is the engine's default",
    "oom_kill_disable": "the out-of-memory killer is never disabled",
    "ulimits": "not supported; use the resource limits",
    "extra_hosts": "not supported",
    "ports": "container jobs publish no ports",
    "publish": "container jobs publish no ports",
}

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def _argv(value: Any) -> Any:
    """A command given as a string is split like a shell would (no shell runs it)."""
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return argv_strings(value)
    return value


Argv = Annotated[tuple[str, ...], BeforeValidator(_argv, json_schema_input_type=str | list[str])]


class Limits(Model):
    """Resource limits; a job's own values win over ``docker.defaults``."""

    memory: Size | None = Field(default=None, description="Memory limit (512m, 2g).")
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU limit.")
    pids_limit: int | None = Field(default=None, ge=1, description="Process limit.")
    shm_size: Size | None = Field(default=None, description="/dev/shm size.")


class Volume(Model):
    """One mount: a host path (must be under ``docker.allowed_host_paths``) or a named volume."""

    source: str = Field(
        description="Absolute host path (under docker.allowed_host_paths) or a volume name (in "
                    "docker.allowed_volumes).")
    target: str = Field(description="Absolute path in the container.")
    read_only: bool = Field(default=False, description="Mount read-only.")

    @property
    def is_host_path(self) -> bool:
        return self.source.startswith("/")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ValueError(f"invalid volume {value!r}: use SOURCE:TARGET or SOURCE:TARGET:ro")
            return {"source": parts[0], "target": parts[1], "read_only": len(parts) == 3 and parts[2] == "ro"}
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("/"):
            if ".." in value.split("/"):
                raise ValueError(f"host path {value!r} must not contain '..'")
            return posixpath.normpath(value)
        if not _VOLUME_NAME.match(value):
            raise ValueError(f"{value!r} is neither an absolute host path nor a volume name")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"target {value!r} must be an absolute path without '..'")
        return posixpath.normpath(value)


def _check_network(value: str) -> str:
    if value == "host" or value.startswith("container:"):
        raise ValueError(f"network {value!r} is not allowed: use a named network or 'none'")
    if not _NETWORK_NAME.match(value):
        raise ValueError(f"invalid network name {value!r}")
    return value


# A volume is written as "SOURCE:TARGET[:ro]" or as a mapping; the schema says both.
VolumeEntry = Annotated[Volume, BeforeValidator(lambda v: v, json_schema_input_type=str | Volume)]


class ContainerJob(JobBase):
    """Run an image as a sibling container through the Docker Engine API.

    The container's environment is exactly ``env`` plus the scheduler variables named in
    ``pass_env`` (and ``SCHEDULER_*`` run facts): nothing of the scheduler's own environment,
    secrets included, reaches a container unless listed for it.
    """

    kind: Literal["container"] = Field(description="container: run an image as a sibling container.")
    image: str = Field(description="Image tag or digest; must match docker.allowed_images.")
    command: Argv | None = Field(
        default=None,
        description="Arguments (a string is split like a shell would; no shell runs it); placeholders filled in.")
    entrypoint: Argv | None = Field(default=None, description="Overrides the image's entrypoint; [] clears it.")
    pass_env: tuple[str, ...] = Field(
        default=(), description="Scheduler environment variables copied into the container; nothing else reaches it.")
    working_dir: str | None = Field(default=None, description="Absolute working directory in the container.")
    user: str | None = Field(default=None, description="NAME, UID or UID:GID to run as.")
    network: str | None = Field(
        default=None, description="A named network or none (default: docker.network); host is refused.")
    data_mount: str | None = Field(
        default=None, description="Where the data volume is mounted in the container, optionally with :ro.")
    volumes: tuple[VolumeEntry, ...] = Field(
        default=(),
        description="SRC:DST[:ro|rw] or {source, target, read_only}; host paths only under docker.allowed_host_paths,"
                    " volumes only from docker.allowed_volumes.")
    memory: Size | None = Field(default=None, description="Memory limit (512m, 2g); swap equal, so none.")
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU limit.")
    pids_limit: int | None = Field(default=None, ge=1, description="Process limit.")
    shm_size: Size | None = Field(default=None, description="/dev/shm size (64m).")
    gpus: Literal["all"] | int | tuple[str, ...] | None = Field(
        default=None, description="GPU device requests: all, a count, or a list of device ids.",
        json_schema_extra={"anyOf": [  # what the validator below accepts
            {"const": "all"}, {"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]*[1-9][0-9]*$"},
            {"type": "array", "minItems": 1, "items": {"anyOf": [
                {"type": "string", "pattern": _DEVICE_ID.pattern}, {"type": "integer", "minimum": 0}]}},
            {"type": "null"}]})
    gpu_policy: Literal["required", "preferred"] = Field(
        default="required",
        description="Without a GPU runtime: fail (required), or rerun without GPU with a warning (preferred).")
    capabilities: tuple[str, ...] = Field(
        default=(), description="Capabilities kept from Docker's default set; all others are dropped.")
    pull: Literal["never", "missing", "always"] = Field(default="missing", description="When to pull the image.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra container labels (org.cron-scheduler.* is reserved).")
    data_volume: str | None = Field(
        default=None,
        description="The volume (or allowed host path) behind data_mount for this job (default: docker.data_volume).")
    # docker.backend: swarm only (refused under engine by check_against_settings)
    placement: Placement | None = Field(
        default=None, description="Swarm placement: {constraints: [...], preferences: [spread=...]}; swarm only.")
    reservations: Reservations | None = Field(
        default=None, description="What Swarm sets aside on the node: {memory, cpus}; swarm only.")
    start_timeout: Duration | None = Field(
        default=None, description="Fail a task Swarm cannot place within this long (default 5m); swarm only.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_forbidden(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in FORBIDDEN_KEYS:
                    raise ValueError(f"'{key}' is not allowed: {FORBIDDEN_KEYS[key]}")
        return data

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"invalid image reference {value!r}")
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        return None if value is None else _check_network(value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", value):
            raise ValueError(f"invalid user {value!r}: use NAME, UID or UID:GID")
        return value

    @field_validator("working_dir")
    @classmethod
    def _container_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"{value!r} must be an absolute path without '..'")
        return value

    @field_validator("data_mount")
    @classmethod
    def _data_mount(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path, _, mode = value.partition(":")
        if not path.startswith("/") or ".." in path.split("/") or mode not in ("", "ro", "rw"):
            raise ValueError(f"invalid data_mount {value!r}: use an absolute container path, optionally with :ro")
        return value

    @field_validator("data_volume")
    @classmethod
    def _job_data_volume(cls, value: str | None) -> str | None:
        if value is not None:
            return Volume(source=value, target="/data").source  # same rules as a volume's source
        return value

    @field_validator("pass_env", mode="before")
    @classmethod
    def _env_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        for name in value or ():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"invalid environment variable name {name!r}")
        return value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("use 'all', a count, or a list of device ids")
        if isinstance(value, str) and value != "all":
            if not re.fullmatch(r"[0-9]+", value):
                raise ValueError(f"invalid gpus {value!r}: use 'all', a count, or a list of device ids")
            value = int(value)  # a quoted count ("2"), checked like a number
        if isinstance(value, int) and value < 1:
            raise ValueError("a GPU count must be at least 1")
        if isinstance(value, list):
            if not value:
                raise ValueError("the list of GPU device ids must not be empty")
            ids = [str(v) for v in value]
            for dev in ids:
                if not _DEVICE_ID.match(dev):
                    raise ValueError(f"invalid GPU device id {dev!r}")
            return ids
        return value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        out = []
        for cap in value or ():
            name = str(cap).upper().removeprefix("CAP_")
            if name not in DEFAULT_CAPABILITIES:
                raise ValueError(
                    f"capability {cap!r} is not allowed: only Docker's defaults can be kept "
                    f"({', '.join(sorted(DEFAULT_CAPABILITIES))})"
                )
            out.append(name)
        return out

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key.startswith(LABEL_PREFIX):
                raise ValueError(f"label {key!r} is reserved: '{LABEL_PREFIX}*' labels are set by the scheduler")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContainerJob:
        targets = [v.target for v in self.volumes] + ([self.data_target] if self.data_mount else [])
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"more than one volume mounted at {', '.join(dupes)}")
        if self.data_volume is not None and not self.data_mount:
            raise ValueError("'data_volume' needs 'data_mount' (where the volume is mounted in the container)")
        return self

    @property
    def data_target(self) -> str:
        """Where the data volume is mounted in the container ('' when not mounted)."""
        return (self.data_mount or "").partition(":")[0]

    @property
    def data_read_only(self) -> bool:
        return (self.data_mount or "").endswith(":ro")

    def effective_limits(self, defaults: Limits | None) -> Limits:
        """The job's own limits where set, else the global ``docker.defaults``."""
        defaults = defaults or Limits()
        return Limits(**{
            name: getattr(self, name) if getattr(self, name) is not None else getattr(defaults, name)
            for name in Limits.model_fields
        })
