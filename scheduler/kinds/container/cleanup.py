"""Remove containers left by crashed runs: ``python -m scheduler.kinds.container.cleanup``.

Reads the ``docker:`` settings as JSON on stdin (empty input: defaults), stops and removes every
container this scheduler instance labelled (with ``backend: swarm``, first every service), and
prints ``job=NAME run_id=N`` for each.  The daemon
runs this in a child on start, so the daemon itself never imports the Docker SDK.  Exit 1, with
the reason on stderr, when the engine cannot be reached.
"""

from __future__ import annotations

import sys

from scheduler.errors import SchedulerError
from scheduler.kinds.container.run import cleanup_orphans
from scheduler.kinds.container.settings import DockerSettings


def main(stdin: str | None = None) -> int:
    text = (sys.stdin.read() if stdin is None else stdin).strip()
    settings = DockerSettings.model_validate_json(text) if text else DockerSettings()
    try:
        removed = cleanup_orphans(settings)
    except SchedulerError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # the engine's errors (HTTP, socket) end here with one line
        print(f"orphan cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for job, run_id in removed:
        print(f"job={job} run_id={run_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
