"""The config pipeline: files -> YAML with lines -> merge -> typed models -> semantic checks.

No raw dict leaves this module: the result is a frozen :class:`Config`.  Every problem becomes a
:class:`ConfigIssue` with file, line, job and field, and all of them are raised together as one
:class:`ConfigError` (exit 2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from scheduler.config.compiled import Config
from scheduler.config.issues import suggest as _suggest
from scheduler.config.issues import translate
from scheduler.config.jobs import CommandJob, JobBase, PythonJob
from scheduler.config.notifiers import notifier_urls, resolving_without_trigger
from scheduler.config.partial import known_values, model_checks, on_known
from scheduler.config.settings import DaemonSettings, HttpSettings, StateSettings
from scheduler.config.yamlsrc import YamlDoc, load_yaml
from scheduler.errors import ConfigError, ConfigIssue
from scheduler.kinds.container.allowlist import allowlist_problems, data_volume_problems
from scheduler.kinds.container.spec import FORBIDDEN_KEYS, ContainerJob, DockerSettings
from scheduler.kinds.container.swarm_spec import backend_problems
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.redaction import MIN_SECRET_LENGTH
from scheduler.schedule import Schedule, parse_cron

JOB_MODELS: Mapping[str, type[JobBase]] = MappingProxyType({
    "command": CommandJob,
    "python": PythonJob,
    "ingest": IngestJob,
    "container": ContainerJob,
})
SECTIONS: Mapping[str, type[BaseModel]] = MappingProxyType({
    "daemon": DaemonSettings,
    "state": StateSettings,
    "http": HttpSettings,
    "docker": DockerSettings,
})
TOP_LEVEL = ("defaults", "jobs", *SECTIONS)
# Keys a kind refuses outright (security): reported one per key, at its own line.
FORBIDDEN: Mapping[str, Mapping[str, str]] = MappingProxyType({"container": FORBIDDEN_KEYS})
_MERGED_DICTS = ("env", "params")
# What the checks across fields and jobs read (see _semantic_checks).
SEMANTIC_FIELDS = ("schedule", "after", "image", "volumes", "data_volume", "pull", "gpu_policy", "gpus", "placement",
                   "reservations", "start_timeout", "on_failure", "on_recovery", "on_success")


def config_files(path: Path) -> list[Path]:
    """The YAML files a config path stands for: the file itself, or a directory's ``*.yaml`` sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _Merge:
    """Files merged into one view, remembering which document each part came from."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.defaults: dict[str, tuple[Any, YamlDoc]] = {}
        self.jobs: dict[str, tuple[Any, YamlDoc]] = {}
        self.sections: dict[str, tuple[Any, YamlDoc]] = {}
        self.secrets: set[str] = set()
        self.bad_defaults: set[str] = set()  # defaults keys already reported invalid: not merged

    def add(self, doc: YamlDoc) -> None:
        self.issues.extend(doc.issues)
        self.secrets |= doc.secrets
        if doc.data is None:
            return
        if not isinstance(doc.data, dict):
            self.issues.append(ConfigIssue("top level must be a mapping with 'jobs:'", file=doc.file, line=1))
            return
        for key, value in doc.data.items():
            line = doc.line_of((key,))
            if key not in TOP_LEVEL:
                self.issues.append(ConfigIssue(f"unknown top-level key '{key}'{_suggest(str(key), list(TOP_LEVEL))}",
                                               file=doc.file, line=line))
            elif key in ("defaults", "jobs"):
                if value is None:
                    continue
                if not isinstance(value, dict):
                    self.issues.append(ConfigIssue(f"'{key}' must be a mapping", file=doc.file, line=line))
                    continue
                target = self.defaults if key == "defaults" else self.jobs
                for name, body in value.items():
                    if name in target:
                        other = target[name][1]
                        where = f"{other.file}:{other.line_of((key, name))}"
                        what = f"job '{name}'" if key == "jobs" else f"defaults key '{name}'"
                        self.issues.append(ConfigIssue(f"{what} is defined twice (first in {where})",
                                                       file=doc.file, line=doc.line_of((key, name))))
                    else:
                        target[name] = (body, doc)
            elif key in self.sections:
                other = self.sections[key][1]
                self.issues.append(ConfigIssue(f"section '{key}' is defined twice (first in "
                                               f"{other.file}:{other.line_of((key,))})",
                                               file=doc.file, line=line))
            else:
                self.sections[key] = (value, doc)


def _validate_section(name: str, merge: _Merge) -> tuple[BaseModel | None, list[ConfigIssue]]:
    model = SECTIONS[name]
    if name not in merge.sections:
        return model(), []
    raw, doc = merge.sections[name]
    try:
        return model.model_validate(raw if raw is not None else {}), []
    except ValidationError as exc:
        return None, translate(exc, raw, lambda path: (doc.file, doc.line_of((name, *path))), prefix=name,
                               model=model, skip=lambda path: doc.failed_under((name, *path)))


def _facts(model: type[JobBase], data: dict[str, Any], spec: JobBase | None) -> dict[str, Any]:
    """The fields the semantic checks read: from the spec, or those valid on their own."""
    names = [n for n in SEMANTIC_FIELDS if n in model.model_fields]
    if spec is not None:
        return {n: getattr(spec, n) for n in names}
    return known_values(model, data, names)


def _validate_job(name: str, raw: Any, doc: YamlDoc,
                  merge: _Merge) -> tuple[JobBase | None, dict[str, Any], list[ConfigIssue]]:
    """The job's spec (``None`` if invalid), the facts semantic checks need, and its problems.

    The facts are there even when the spec is not: a wrong key never hides the checks of the
    others (``after:`` references, cron syntax, container allowlists).
    """
    line = doc.line_of(("jobs", name))
    if not isinstance(raw, dict):
        return None, {}, [ConfigIssue("must be a mapping of job settings", file=doc.file, line=line, job=name)]
    kind = raw.get("kind", merge.defaults.get("kind", (None,))[0])
    model = JOB_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        facts = _facts(JobBase, raw, None)  # the fields every kind shares can still be checked
        if kind is None:
            return None, facts, [ConfigIssue(f"required key is missing (one of {', '.join(JOB_MODELS)})",
                                             file=doc.file, line=line, job=name, field="kind")]
        return None, facts, [ConfigIssue(f"unknown job kind {kind!r}{_suggest(str(kind), list(JOB_MODELS))} "
                                         f"(one of {', '.join(JOB_MODELS)})", file=doc.file,
                                         line=doc.line_of(("jobs", name, "kind")), job=name, field="kind")]
    issues: list[ConfigIssue] = []
    merged = dict(raw)
    for key, reason in FORBIDDEN.get(kind, {}).items():
        if key in merged:
            issues.append(ConfigIssue(f"'{key}' is not allowed: {reason}", file=doc.file,
                                      line=doc.line_of(("jobs", name, key)), job=name, field=key))
            del merged[key]
    from_defaults: dict[str, YamlDoc] = {}
    for key, (value, ddoc) in merge.defaults.items():
        if key not in model.model_fields or key in merge.bad_defaults:
            continue
        if key not in merged:
            merged[key] = value
            from_defaults[key] = ddoc
        elif key in _MERGED_DICTS and isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = {**value, **merged[key]}

    def locate(path: tuple[Any, ...]) -> tuple[str, int | None]:
        if path and path[0] in from_defaults:
            ddoc = from_defaults[path[0]]
            return ddoc.file, ddoc.line_of(("defaults", *path))
        return doc.file, doc.line_of(("jobs", name, *path))

    def follow_on(path: tuple[Any, ...]) -> bool:
        """An error caused by a problem already reported while reading the YAML."""
        if path and path[0] in from_defaults:
            return from_defaults[path[0]].failed_under(("defaults", *path))
        return doc.failed_under(("jobs", name, *path))

    try:
        spec = model.model_validate(merged)
    except ValidationError as exc:
        issues += translate(exc, merged, locate, job=name, model=model, skip=follow_on)
        if all(err["loc"] for err in exc.errors()):  # a field failed, so pydantic ran no model check
            file, job_line = locate(())
            issues += [ConfigIssue(message, file=file, line=job_line, job=name)
                       for message in model_checks(model, merged)]
        return None, _facts(model, merged, None), issues
    return (None if issues else spec), _facts(model, merged, spec), issues


def _validate_defaults(merge: _Merge) -> list[ConfigIssue]:
    """Check ``defaults:`` once against every kind that has each key; bad keys are not merged."""
    issues: list[ConfigIssue] = []
    known = {name for model in JOB_MODELS.values() for name in model.model_fields}
    seen: set[str] = set()
    for key, (_, ddoc) in merge.defaults.items():
        if key not in known:
            merge.bad_defaults.add(key)
            issues.append(ConfigIssue(f"unknown key '{key}'{_suggest(key, sorted(known))}", file=ddoc.file,
                                      line=ddoc.line_of(("defaults", key)), field=f"defaults.{key}"))
    for kind, model in JOB_MODELS.items():
        subset = {k: v for k, (v, _) in merge.defaults.items() if k in model.model_fields and k != "kind"}
        if not subset:
            continue
        try:
            model.model_validate({**subset, "kind": kind})
        except ValidationError as exc:

            def locate(path: tuple[Any, ...]) -> tuple[str, int | None]:
                ddoc = merge.defaults[path[0]][1]
                return ddoc.file, ddoc.line_of(("defaults", *path))

            def unrelated(path: tuple[Any, ...], keys: frozenset[str] = frozenset(subset)) -> bool:
                return not path or path[0] not in keys or merge.defaults[path[0]][1].failed_under(
                    ("defaults", *path))

            for issue in translate(exc, subset, locate, prefix="defaults", model=model, skip=unrelated):
                merge.bad_defaults.add(str(issue.field).split(".")[1])
                if str(issue) not in seen:
                    seen.add(str(issue))
                    issues.append(issue)
    return issues


def _docker_facts(merge: _Merge, docker: DockerSettings | None) -> dict[str, Any]:
    """The ``docker:`` keys jobs are checked against; when the section is invalid, those known
    anyway (defaults of absent keys, given keys valid on their own)."""
    names = ("allowed_images", "allowed_host_paths", "allowed_volumes", "data_volume", "backend", "gpu_resource")
    if docker is not None:
        return {n: getattr(docker, n) for n in names}
    raw = merge.sections.get("docker", ({}, None))[0]
    return known_values(DockerSettings, raw if isinstance(raw, dict) else {}, names)


def _semantic_checks(facts: dict[str, dict[str, Any]], kinds: dict[str, str], where: dict[str, tuple[YamlDoc, str]],
                     docker: dict[str, Any]) -> list[ConfigIssue]:
    """Checks across fields and jobs, over every job's valid fields (see :func:`_validate_job`)."""
    issues: list[ConfigIssue] = []

    def issue(job: str, field_name: str, message: str, at: tuple[Any, ...] = ()) -> None:
        doc, _ = where[job]
        issues.append(ConfigIssue(message, file=doc.file, line=doc.line_of(("jobs", job, *(at or (field_name,)))),
                                  job=job, field=field_name))

    for name, known in facts.items():
        if known.get("schedule") is not None:
            try:
                parse_cron(known["schedule"])
            except ValueError as exc:
                issue(name, "schedule", str(exc))
        for upstream in known.get("after", ()):
            if upstream == name:
                issue(name, "after", "a job cannot run after itself")
            elif upstream not in where:
                issue(name, "after", f"unknown job '{upstream}'{_suggest(upstream, list(where))}")
        for listed, position, problem in on_known(resolving_without_trigger, (JobBase, known)):
            issue(name, f"{listed}.{position}", problem, (listed, position))
        if kinds.get(name) == "container":
            for field_name, message in allowlist_problems(
                    known.get("image"), known.get("volumes", ()), docker.get("allowed_images"),
                    docker.get("allowed_host_paths"), docker.get("allowed_volumes")):
                index = field_name.partition("[")[2].rstrip("]")
                issue(name, field_name, message, ("volumes", int(index)) if index.isdigit() else ())
            for field_name, message in data_volume_problems(
                    known.get("data_volume"), docker.get("data_volume"), docker.get("allowed_host_paths"),
                    docker.get("allowed_volumes")):
                issue(name, field_name, message)
            for field_name, message in on_known(backend_problems, (ContainerJob, known), (DockerSettings, docker)):
                issue(name, field_name, message)
    # cycles in after: (a -> b -> a)
    after = {name: known.get("after", ()) for name, known in facts.items()}
    for name in after:
        seen: list[str] = []
        stack = [(name, [name])]
        while stack:
            current, trail = stack.pop()
            for upstream in after.get(current, ()):
                if upstream == name and len(trail) > 1:
                    seen = trail
                    break
                if upstream in after and upstream not in trail:
                    stack.append((upstream, [*trail, upstream]))
            if seen:
                break
        if seen and name == min(seen):
            issue(name, "after", "dependency cycle: " + " -> ".join([name, *reversed(seen[1:]), name]))
    return issues


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the config at ``path`` (a file or a directory of ``*.yaml``).

    Raises :class:`ConfigError` listing every problem found.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(ConfigIssue("config path does not exist", file=str(path)))
    files = config_files(path)
    if not files:
        raise ConfigError(ConfigIssue("no *.yaml files in config directory", file=str(path)))
    merge = _Merge()
    digest = hashlib.sha256()
    for file in files:
        doc = load_yaml(file, os.environ if env is None else env, display=_display(file))
        digest.update(file.read_bytes() if file.exists() else b"")
        merge.add(doc)

    issues = list(merge.issues)
    issues.extend(_validate_defaults(merge))
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        value, section_issues = _validate_section(name, merge)
        sections[name] = value
        issues.extend(section_issues)

    jobs: dict[str, JobBase] = {}
    facts: dict[str, dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    where = {name: (doc, name) for name, (_, doc) in merge.jobs.items()}
    for name, (raw, doc) in merge.jobs.items():
        spec, facts[name], job_issues = _validate_job(name, raw, doc, merge)
        issues.extend(job_issues)
        if spec is not None:
            jobs[name] = spec
            kinds[name] = spec.kind
        elif isinstance(raw, dict):
            kinds[name] = str(raw.get("kind", merge.defaults.get("kind", (None,))[0]))
    issues.extend(_semantic_checks(facts, kinds, where, _docker_facts(merge, sections["docker"])))
    schedules = {name: Schedule(cron=spec.schedule, every=spec.every, tz=spec.timezone, jitter=spec.jitter)
                 for name, spec in jobs.items()} if not issues else {}
    if issues:
        issues.sort(key=lambda i: (i.file or "", i.line or 0))
        raise ConfigError(issues)
    # alert URLs carry credentials in their path (Slack/Discord webhook tokens, ntfy topics, check UUIDs)
    urls = {url for spec in jobs.values() for url in notifier_urls(spec)}
    return Config(
        jobs=MappingProxyType(jobs), daemon=sections["daemon"], state=sections["state"], http=sections["http"],
        docker=sections["docker"],
        secrets=frozenset(s for s in merge.secrets | sections["state"].secrets() | urls if len(s) >= MIN_SECRET_LENGTH),
        sources=tuple(_display(f) for f in files), digest=digest.hexdigest()[:12],
        schedules=MappingProxyType(schedules),
    )
