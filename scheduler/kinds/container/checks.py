"""The checks of a container job against the ``docker:`` section, as the config loader runs them.

The kind registry names :func:`check_facts` as the ``docker:`` section's check.  It works on facts
(the fields whose values are known), not on models, so a job or section that is invalid elsewhere
still gets every check its known fields allow; a check that needs an unknown value is skipped (that
value's own problem is reported already).  ``execute`` checks the full models again before any
API call (:func:`scheduler.kinds.container.spec.check_against_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.config.partial import on_known
from scheduler.kinds.container.allowlist import allowlist_problems, data_volume_problems
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import ContainerJob
from scheduler.kinds.container.swarm_spec import backend_problems


def check_facts(job: Mapping[str, Any], docker: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for each problem of the job against ``docker:``: images and mounts
    outside the allowlists, its ``data_volume``, and keys the backend cannot honour.

    ``job`` and ``docker`` hold the fields the container kind's registry record lists as what the
    check reads (``job_fields``, ``section_fields``), those whose values are known."""
    problems = allowlist_problems(job.get("image"), job.get("volumes", ()), docker.get("allowed_images"),
                                  docker.get("allowed_host_paths"), docker.get("allowed_volumes"))
    problems += data_volume_problems(job.get("data_volume"), docker.get("data_volume"),
                                     docker.get("allowed_host_paths"), docker.get("allowed_volumes"))
    problems += on_known(backend_problems, (ContainerJob, job), (DockerSettings, docker))
    return problems
