"""What a container attempt does the same way on both backends (engine containers, Swarm services).

Both backends: check the spec against ``docker:`` before any API call, stop what the attempt
created when SIGTERM or SIGINT lands (raising :class:`Interrupted`), always remove it otherwise,
and find what this scheduler instance labelled to retire it on start or shutdown.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from scheduler.config.types import format_duration
from scheduler.errors import ConfigError, ConfigIssue, Interrupted
from scheduler.kinds.base import RunContext
from scheduler.kinds.container.logs import run_logger
from scheduler.kinds.container.payload import RunFacts
from scheduler.kinds.container.settings import DockerSettings, check_against_settings
from scheduler.kinds.container.spec import (
    LABEL_INSTANCE,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_RUN_ID,
    MANAGED_BY,
    ContainerJob,
)
from scheduler.stopping import Stopped, sigterm_raises

# How long to wait for the output stream to drain after the container (or task) has ended.
LOG_DRAIN_SECONDS = 10.0


def settings_of(ctx: RunContext) -> DockerSettings:
    """The run's ``docker:`` settings, the defaults when the context carries none."""
    return ctx.docker if getattr(ctx, "docker", None) is not None else DockerSettings()


def begin(spec: ContainerJob, ctx: RunContext, settings: DockerSettings) -> tuple[Any, RunFacts]:
    """The run's logger and facts, after checking the spec against ``settings``.

    The loader checked already; this guards direct callers, and raises :class:`ConfigError`
    before any API call."""
    problems = check_against_settings(spec, settings)
    if problems:
        raise ConfigError([ConfigIssue(message, job=ctx.job, field=field) for field, message in problems])
    return run_logger(ctx), RunFacts(ctx.job, ctx.run_id, ctx.attempt, ctx.data_dir, ctx.template_vars())


def guarded(
    attempt: Callable[[dict[str, Any]], dict[str, Any]],
    key: str,
    on_stop: Callable[[str, int], None],
    on_leftover: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``attempt(state)``, where ``state[key]`` holds the id of what the attempt created
    while it exists (``None`` once the attempt removed it itself).

    On SIGTERM or SIGINT, ``on_stop(id, signum)`` stops it and :class:`Interrupted` is raised;
    whatever else ends the attempt, ``on_leftover(id)`` removes what is still there.
    """
    state: dict[str, Any] = {key: None}
    # The runner stops a worker by signalling its process group; the container (or task) is not
    # in that group, so this handler is what stops it.  A repeated SIGTERM must not abort that.
    with sigterm_raises(once=True):
        try:
            return attempt(state)
        except (Stopped, KeyboardInterrupt) as exc:
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            if state[key]:
                on_stop(state[key], int(signum))
                state[key] = None
            raise Interrupted(int(signum)) from None
        finally:
            if state[key]:
                on_leftover(state[key])


def fmt_duration(td: timedelta | None) -> str:
    return format_duration(td) if td is not None else "-"


def instance_labels(settings: DockerSettings) -> list[str]:
    """The label filter matching what this scheduler instance created."""
    return [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_INSTANCE}={settings.instance}"]


def job_and_run_id(labels: dict[str, str]) -> tuple[str, int]:
    """``(job, run_id)`` from our labels; ``("?", -1)`` for what is missing or unreadable."""
    try:
        run_id = int(labels.get(LABEL_RUN_ID, "-1"))
    except ValueError:
        run_id = -1
    return labels.get(LABEL_JOB, "?"), run_id


def retire_each(
    found: list[dict[str, Any]], retire: Callable[[dict[str, Any]], tuple[str, int]]
) -> list[tuple[str, int]]:
    """``retire`` each of ``found`` (a few at a time: each may wait out a stop grace), in order."""
    if not found:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(found))) as pool:
        return list(pool.map(retire, found))
