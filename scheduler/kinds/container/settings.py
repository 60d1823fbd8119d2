"""The global ``docker:`` section: how to reach the engine and what container jobs may ask of it,
and the checks of a container job that need that section (:func:`check_against_settings`).

Like :mod:`scheduler.kinds.container.spec`, this module imports no Docker SDK: validating a
config never needs an engine.
"""

from __future__ import annotations

import posixpath
import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from scheduler.config.types import Duration, Model
from scheduler.kinds.container.allowlist import allowlist_problems, data_volume_problems
from scheduler.kinds.container.spec import _NETWORK_NAME, ContainerJob, Limits, Volume, _check_network
from scheduler.kinds.container.swarm_spec import backend_problems


class DockerTLS(Model):
    """Client TLS for ``tcp://`` hosts (``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` are read too)."""

    ca_cert: str | None = Field(default=None, description="CA certificate file.")
    client_cert: str | None = Field(default=None, description="Client certificate file (with client_key).")
    client_key: str | None = Field(default=None, description="Client key file (with client_cert).")
    verify: bool = Field(default=True, description="Verify the engine's certificate.")

    @model_validator(mode="after")
    def _pair(self) -> DockerTLS:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("set both 'client_cert' and 'client_key', or neither")
        return self


class DockerSettings(Model):
    """The global ``docker:`` section: how to reach the engine and what jobs may ask of it.

    ``backend: engine`` runs each attempt as a container on the engine; ``backend: swarm`` as a
    ``replicated-job`` service on the Swarm that engine manages (see ``swarm_run``)."""

    backend: Literal["engine", "swarm"] = Field(
        default="engine", description="engine: a container per run; swarm: a replicated-job service per run.")
    host: str | None = Field(
        default=None,
        description="Engine address: unix://, tcp:// or ssh:// (default: $DOCKER_HOST, else the local socket).")
    tls: DockerTLS | None = Field(default=None, description="Client TLS for tcp:// hosts.")
    use_ssh_client: bool = Field(default=True, description="ssh:// through the ssh binary (false: paramiko).")
    api_version: str = Field(default="auto", description="Engine API version.")
    timeout: Duration = Field(default=timedelta(seconds=60), description="API request timeout.")
    instance: str = Field(
        default="default", description="Label that scopes orphan cleanup when several schedulers share an engine.")
    allowed_images: tuple[str, ...] = Field(default=("*",), description="Image allowlist (globs).")
    allowed_host_paths: tuple[str, ...] = Field(
        default=(), description="Host path prefixes container jobs may bind (absolute).")
    allowed_volumes: tuple[str, ...] = Field(default=(), description="Named volumes container jobs may mount.")
    data_volume: str | None = Field(
        default=None,
        description="Volume name or host path behind data_mount on the engine's host (default: the data dir's path).")
    network: str = Field(default="none", description="Default network for container jobs.")
    defaults: Limits = Field(
        default=Limits(), description="Default resource limits: {memory, cpus, pids_limit, shm_size}.")
    stop_grace: Duration = Field(default=timedelta(seconds=10), description="Grace for orphan cleanup and shutdown.")
    gpu_resource: str = Field(
        default="NVIDIA-GPU",
        description="Swarm: the generic resource nodes advertise GPUs as (node-generic-resources).")
    isolated_network: str = Field(
        default="scheduler-isolated",
        description="Swarm: the internal overlay network (no gateway) tasks of jobs on network none join.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(unix|tcp|ssh|npipe|http|https)://", value):
            raise ValueError(f"invalid docker host {value!r}: use unix://, tcp:// or ssh://")
        return value

    @field_validator("allowed_host_paths")
    @classmethod
    def _abs_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"allowed host path {path!r} must be absolute, without '..'")
        return tuple(posixpath.normpath(p) for p in value)

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        return _check_network(value)

    @field_validator("gpu_resource", "isolated_network")
    @classmethod
    def _swarm_names(cls, value: str) -> str:
        if not _NETWORK_NAME.match(value):
            raise ValueError(f"invalid name {value!r}")
        return value

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"invalid instance name {value!r}")
        return value

    @field_validator("data_volume")
    @classmethod
    def _data_volume(cls, value: str | None) -> str | None:
        if not value:
            return None  # empty (an unset ${VAR:-}): the data dir's own path
        if value is not None:
            Volume(source=value, target="/data")  # same rules as a job's volume source
        return value


def check_against_settings(job: ContainerJob, settings: DockerSettings | None) -> list[tuple[str, str]]:
    """Checks that need the global ``docker:`` section: ``(field, message)`` for each problem."""
    settings = settings or DockerSettings()
    problems = allowlist_problems(job.image, job.volumes, settings.allowed_images, settings.allowed_host_paths,
                                  settings.allowed_volumes)
    problems.extend(data_volume_problems(job.data_volume, settings.data_volume, settings.allowed_host_paths,
                                         settings.allowed_volumes))
    problems.extend(backend_problems(job, settings))
    return problems
