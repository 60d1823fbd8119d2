"""Running the kinds' daemon steps (:class:`~scheduler.kinds.registry.ChildHook`) in child processes.

The daemon calls :func:`run_hooks` on start and after a shutdown that had to kill runs.  Each step
runs as ``python -m <module>`` so the daemon's process never imports the kind (the Docker SDK for
orphan cleanup); a step that fails or hangs is logged and never stops the daemon.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from scheduler.kinds.registry import ChildHook, HookStage, Registry

HOOK_TIMEOUT = 60  # seconds; an engine that does not answer must not hold the daemon's start


def run_hooks(registry: Registry, stage: HookStage, kinds_of_jobs: Mapping[str, str],
              section_json: Callable[[str], Any], log: Any) -> None:
    """Run ``stage``'s steps of every kind that has jobs (``kinds_of_jobs``: job name -> kind).

    ``section_json(name)`` is the JSON form of the config section a step reads.
    """
    for kind in registry:
        jobs = sorted(name for name, kind_name in kinds_of_jobs.items() if kind_name == kind.name)
        if not jobs:
            continue
        for hook in kind.hooks(stage):
            run_hook(hook, section_json(hook.section), jobs, log)


def run_hook(hook: ChildHook, section: Any, jobs: list[str], log: Any) -> None:
    """One step in a child; its output and failure logged in the step's own words."""
    try:
        out = subprocess.run([sys.executable, "-m", hook.module], input=json.dumps(section),
                             capture_output=True, text=True, timeout=HOOK_TIMEOUT)
        for line in out.stdout.splitlines():
            if line.strip():
                log.warning(hook.done, detail=line.strip())
        if out.returncode != 0:
            error = (out.stderr.strip().splitlines() or ["no output"])[-1][-500:]
            if hook.unavailable and hook.unavailable_prefix and error.startswith(hook.unavailable_prefix):
                # not a problem of the step: the kind's jobs themselves cannot run; say which and why
                log.warning(hook.unavailable, jobs=jobs, error=error)
            else:
                log.warning(hook.failed, error=error)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning(hook.failed, error=str(exc))
