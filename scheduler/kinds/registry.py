"""The kind registry: one record per job kind, the one place the rest of the scheduler learns about kinds.

A record names everything by import path (``module:attribute``), resolved on first use with
:func:`resolve`, so reading the registry imports nothing heavy: the daemon consults it without
ever importing pydantic, pandas, pyarrow or the Docker SDK.  Who reads what:

- the config loader: ``spec`` (the job model), ``forbidden`` (keys refused with a reason),
  ``sections`` (top-level sections the kind owns, with their models and the checks of a job
  against them);
- the runner: ``argv`` (a kind that runs as its own process: compiled spec -> argv) or
  ``executor`` (a kind that runs inside ``python -m scheduler.worker``), and ``passes`` (the
  sections the worker hands in, validated, as :class:`~scheduler.kinds.base.RunContext` fields);
- the worker: ``spec``, ``executor`` and ``passes`` (a failure carrying the work's own exit
  status says so itself: :attr:`scheduler.errors.JobFailed.work_exit_code`);
- the daemon: ``on_start`` and ``on_forced_stop`` (:class:`ChildHook` steps run in a child).

Adding a kind is one module (its model and entry point) plus one line in :data:`BUILTIN`.  Kinds
that are not built in are named by ``SCHEDULER_KINDS`` (comma-separated ``module:attribute`` of
:class:`Kind` records): every process of the scheduler (compile child, daemon, worker) reads the
same variable, so they agree on the kinds.  The module holding such a record must be as light as
this one (records only), since the daemon imports it.

A section a kind owns reaches the long-running processes as the compiled config's attribute of
the same name (``Config.docker``): a kind with a new section adds that attribute there too.

Invariants: names are unique; a kind has exactly one of ``argv`` / ``executor``; a registry is
immutable (``with_plugins`` returns a new one), so nothing registered in one place leaks elsewhere.
"""

from __future__ import annotations

import os
import pkgutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from scheduler.errors import ConfigError

KINDS_ENV = "SCHEDULER_KINDS"
HookStage = Literal["start", "forced_stop"]


def resolve(ref: str, noun: str = "attribute") -> Any:
    """Import ``package.module:name`` (``pkgutil.resolve_name``); the one resolver of the package.

    A missing module raises ``ModuleNotFoundError`` as Python words it; a missing name raises
    ``AttributeError("module 'package.module' has no <noun> 'name'")`` (``noun="function"`` for
    user functions, the default reads exactly like Python's own message).
    """
    module_name, _, attr = ref.partition(":")
    try:
        return pkgutil.resolve_name(ref)
    except AttributeError:
        module = sys.modules.get(module_name)
        if module is None or hasattr(module, attr.partition(".")[0]):
            raise  # raised while importing the module, or deeper than its top-level name: as it is
        raise AttributeError(f"module '{module_name}' has no {noun} '{attr}'") from None


@dataclass(frozen=True)
class Section:
    """A top-level config section a kind owns (``docker:`` is the container kind's)."""

    name: str
    model: str  # ``module:Class`` of its settings model
    # ``module:function`` (job facts, section facts) -> [(field, message)]: the checks of one job
    # of the kind against the section.  Facts are the fields valid on their own, so a bad key
    # elsewhere hides no problem; a missing fact means "unknown, skip that check".
    check: str | None = None
    job_fields: tuple[str, ...] = ()  # what the check reads of the job
    section_fields: tuple[str, ...] = ()  # ... and of the section


@dataclass(frozen=True)
class ChildHook:
    """A daemon step for a kind, run as ``python -m module`` with the JSON of ``section`` on stdin.

    Runs only when the config has jobs of the kind, in a child so the daemon imports nothing of
    the kind.  Each line the child prints is logged as ``done`` (detail=line); a failure (exit
    non-zero) is logged as ``failed`` with the last line of stderr, unless that line begins with
    ``unavailable_prefix``: then the kind's jobs cannot run at all, logged as ``unavailable``
    with the job names.
    """

    module: str
    section: str
    done: str
    failed: str
    unavailable_prefix: str | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class Kind:
    """One job kind: its name and where each of its parts lives."""

    name: str
    spec: str  # ``module:Class``: the job model (pydantic, derived from scheduler.config.jobs.JobBase)
    argv: str | None = None  # own process: ``module:function`` turning the compiled spec into argv
    executor: str | None = None  # worker child: ``module:function`` (spec, ctx) -> metrics
    forbidden: str | None = None  # ``module:MAPPING`` of key -> why it is refused (security)
    sections: tuple[Section, ...] = ()
    passes: tuple[str, ...] = ()  # sections the worker passes in, as RunContext fields of the same name
    on_start: tuple[ChildHook, ...] = ()
    on_forced_stop: tuple[ChildHook, ...] = ()  # after a shutdown had to kill runs

    def __post_init__(self) -> None:
        if (self.argv is None) == (self.executor is None):
            raise ValueError(f"kind {self.name!r}: set exactly one of 'argv' (own process) or 'executor' (worker)")

    def hooks(self, stage: HookStage) -> tuple[ChildHook, ...]:
        return self.on_start if stage == "start" else self.on_forced_stop


@dataclass(frozen=True)
class Registry:
    """The kinds in effect, in order (the order of error texts and of the JSON Schema)."""

    kinds: tuple[Kind, ...]
    plugins: tuple[str, ...] = field(default=())  # refs of the records added by with_plugins

    def __post_init__(self) -> None:
        names = [kind.name for kind in self.kinds]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"job kind registered twice: {', '.join(duplicates)}")

    def __iter__(self) -> Iterator[Kind]:
        return iter(self.kinds)

    def names(self) -> list[str]:
        return [kind.name for kind in self.kinds]

    def get(self, name: str) -> Kind:
        for kind in self.kinds:
            if kind.name == name:
                return kind
        raise KeyError(f"unknown job kind {name!r}")

    def with_plugins(self, *refs: str) -> Registry:
        """This registry plus the :class:`Kind` records at ``refs`` (``module:attribute``)."""
        added = []
        for ref in refs:
            kind = resolve(ref)
            if not isinstance(kind, Kind):
                raise TypeError(f"{ref} is a {type(kind).__name__}, not a scheduler.kinds.registry.Kind")
            added.append(kind)
        return Registry((*self.kinds, *added), (*self.plugins, *refs))

    def environ(self) -> dict[str, str]:
        """The environment that makes a child process see this registry (see :func:`current`)."""
        return {KINDS_ENV: ",".join(self.plugins)}

    # --- resolved parts: these import the kinds' models (pydantic), for the loader and worker only
    def job_models(self) -> dict[str, Any]:
        return {kind.name: resolve(kind.spec) for kind in self.kinds}

    def section_models(self) -> dict[str, Any]:
        return {section.name: resolve(section.model) for kind in self.kinds for section in kind.sections}

    def forbidden(self) -> dict[str, Mapping[str, str]]:
        return {kind.name: resolve(kind.forbidden) for kind in self.kinds if kind.forbidden}

    def section_model(self, name: str) -> Any:
        for kind in self.kinds:
            for section in kind.sections:
                if section.name == name:
                    return resolve(section.model)
        raise KeyError(f"no kind owns a section {name!r}")


# What the container kind's docker: check (scheduler.kinds.container.checks) reads.
_CONTAINER_JOB_FIELDS = ("image", "volumes", "data_volume", "pull", "gpu_policy", "gpus", "placement",
                         "reservations", "start_timeout")
_DOCKER_FIELDS = ("allowed_images", "allowed_host_paths", "allowed_volumes", "data_volume", "backend", "gpu_resource")
_CONTAINER_CLEANUP = ChildHook(
    module="scheduler.kinds.container.cleanup", section="docker",
    done="orphan container removed", failed="orphan container cleanup failed",
    # how ``scheduler.kinds.container.engine.EngineUnavailable`` begins
    unavailable_prefix="cannot reach the Docker engine at ", unavailable="container jobs need a Docker engine",
)

# One line per kind.  The order is the order users see kinds listed in ("one of command, python, ...").
BUILTIN = Registry((
    Kind("command", spec="scheduler.kinds.command.spec:CommandJob", argv="scheduler.kinds.command:command_argv"),
    Kind("python", spec="scheduler.kinds.python:PythonJob", executor="scheduler.kinds.python:execute"),
    Kind("ingest", spec="scheduler.kinds.ingest.spec:IngestJob", executor="scheduler.kinds.ingest:execute"),
    Kind("container", spec="scheduler.kinds.container.spec:ContainerJob",
         executor="scheduler.kinds.container:execute",
         forbidden="scheduler.kinds.container.spec:FORBIDDEN_KEYS",
         sections=(Section("docker", model="scheduler.kinds.container.settings:DockerSettings",
                           check="scheduler.kinds.container.checks:check_facts",
                           job_fields=_CONTAINER_JOB_FIELDS, section_fields=_DOCKER_FIELDS),),
         passes=("docker",),
         # after a forced shutdown, killed workers could not stop their containers themselves
         on_start=(_CONTAINER_CLEANUP,), on_forced_stop=(_CONTAINER_CLEANUP,)),
))


def current(environ: Mapping[str, str] | None = None) -> Registry:
    """:data:`BUILTIN` plus the kinds ``SCHEDULER_KINDS`` names in ``environ`` (default: this process's)."""
    raw = (os.environ if environ is None else environ).get(KINDS_ENV, "")
    refs = [ref.strip() for ref in raw.split(",") if ref.strip()]
    if not refs:
        return BUILTIN
    try:
        return BUILTIN.with_plugins(*refs)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:  # a setup mistake: one line, exit 2
        raise ConfigError(f"{KINDS_ENV}={raw}: {exc}") from None


__all__ = ["BUILTIN", "KINDS_ENV", "ChildHook", "Kind", "Registry", "Section", "current", "resolve"]
