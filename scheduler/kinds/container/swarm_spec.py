"""What ``docker.backend: swarm`` adds to a container job, and which keys each backend refuses.

A key that only one backend can honour is a config error under the other one (reported by the
loader with file, line, job and field), never silently ignored:

- engine only: ``pull`` other than ``missing`` (on Swarm each node pulls for itself),
  ``gpu_policy: preferred`` (a Swarm task waits for a node with a free GPU; there is no
  fallback), ``gpus`` as ``all`` or device ids (Swarm reserves GPUs by count, as a generic
  resource);
- swarm only: ``placement``, ``reservations``, ``start_timeout``.

No Docker SDK here: validating a config never needs an engine.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from scheduler.config.sizes import Size
from scheduler.config.types import Model

if TYPE_CHECKING:
    from scheduler.kinds.container.settings import DockerSettings
    from scheduler.kinds.container.spec import ContainerJob

SWARM_ONLY = ("placement", "reservations", "start_timeout")

_CONSTRAINT = re.compile(r"^\s*[A-Za-z][A-Za-z0-9_.-]*\s*(==|!=)\s*[^\s=!][^\n]*$")
_PREFERENCE = re.compile(r"^spread=[A-Za-z][A-Za-z0-9_.-]*$")


class Placement(Model):
    """Where a Swarm task may run: ``constraints`` as ``docker service create --constraint``
    takes them (``node.labels.gpu==true``), ``preferences`` as ``--placement-pref``
    (``spread=node.labels.zone``)."""

    constraints: tuple[str, ...] = Field(
        default=(), description="Node constraints, ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE (node.labels.gpu==true).")
    preferences: tuple[str, ...] = Field(
        default=(), description="Placement preferences, spread=ATTRIBUTE (spread=node.labels.zone).")

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _CONSTRAINT.match(item):
                raise ValueError(f"invalid constraint {item!r}: use ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE "
                                 "(like node.labels.gpu==true)")
        return tuple(item.strip() for item in value)

    @field_validator("preferences")
    @classmethod
    def _preferences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _PREFERENCE.match(item):
                raise ValueError(f"invalid placement preference {item!r}: use spread=ATTRIBUTE "
                                 "(like spread=node.labels.zone)")
        return value


class Reservations(Model):
    """What Swarm sets aside on the node for the task (a node without that much free is not picked)."""

    memory: Size | None = Field(default=None, description="Memory reserved on the node (24g).")
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPUs reserved on the node.")


def backend_problems(job: ContainerJob, settings: DockerSettings) -> list[tuple[str, str]]:
    """``(field, message)`` for each key of ``job`` that ``settings.backend`` cannot honour.

    Judged on values, not on which keys were written: the worker re-checks a fully dumped spec,
    where every field is present."""
    problems: list[tuple[str, str]] = []
    if settings.backend == "swarm":
        if job.pull != "missing":
            problems.append(("pull", "not supported with docker.backend: swarm (each node pulls the image "
                                     "itself); remove it"))
        if job.gpu_policy != "required":
            problems.append(("gpu_policy", "not supported with docker.backend: swarm (a task waits for a node "
                                           "with a free GPU; there is no fallback); remove it"))
        if job.gpus is not None and not isinstance(job.gpus, int):
            problems.append(("gpus", f"with docker.backend: swarm GPUs are reserved by count, as the generic "
                                     f"resource {settings.gpu_resource}: use a number"))
    else:
        for key in SWARM_ONLY:
            if getattr(job, key) is not None:
                problems.append((key, f"'{key}' needs docker.backend: swarm"))
    return problems
