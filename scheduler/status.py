"""Run statuses: the one vocabulary for what a run record says about a run.

:class:`RunStatus` is a ``StrEnum``: each member *is* its string (``RunStatus.SUCCESS ==
"success"``, ``json.dumps`` and f-strings give ``success``), so the values stored in SQLite and
PostgreSQL, shown in JSON output and used as metrics labels are the same strings as before.
Stores write ``status.value`` (a plain ``str``) so no database adapter ever sees the enum type.

Invariants: a record is ``running`` while an attempt holds it; every other status is final
(:data:`FINAL_STATUSES`), and ``finish_run`` accepts only those.
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """What a run record says: in progress (``running``) or how the run ended."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"  # the attempt exited non-zero, was killed, or could not start
    TIMEOUT = "timeout"  # stopped after the job's ``timeout``
    INTERRUPTED = "interrupted"  # stopped by shutdown or ``replace``, or still queued at shutdown
    SKIPPED = "skipped"  # not run: ``concurrency: forbid`` while a run was active
    ABANDONED = "abandoned"  # the scheduler that held it stopped or lost its lease


FINAL_STATUSES: tuple[RunStatus, ...] = tuple(s for s in RunStatus if s is not RunStatus.RUNNING)
