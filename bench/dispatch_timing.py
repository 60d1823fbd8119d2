"""What the container dispatch benchmarks share: a run context as a worker builds it, the timed
``execute()`` of a job, and the alternating of our runs with the CLI's so drift hits both alike.

Imported by ``container_bench.py`` and ``swarm_bench.py`` (run as scripts: this directory is on
``sys.path``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.kinds.base import RunContext  # noqa: E402
from scheduler.kinds.container import execute  # noqa: E402
from scheduler.kinds.container.settings import DockerSettings  # noqa: E402
from scheduler.kinds.container.spec import ContainerJob  # noqa: E402


class _Quiet:
    def info(self, *a: object, **k: object) -> None: ...

    warning = error = info


def _ctx(run_id: int, settings: DockerSettings) -> RunContext:
    start = datetime.now(UTC)
    return RunContext(
        job="bench_true", run_id=run_id, attempt=1, slot=start, logical_date=date.today(),
        data_interval_start=start, data_interval_end=start, data_dir=Path("data"), log=_Quiet(), docker=settings,
    )  # fmt: skip


def timed_job(spec: ContainerJob, settings: DockerSettings) -> Callable[[int], float]:
    """``job(run_id)``: seconds one ``execute()`` of ``spec`` takes, as a worker calls it."""

    def job(i: int) -> float:
        t = time.perf_counter()
        execute(spec, _ctx(i, settings))
        return time.perf_counter() - t

    return job


def alternate(job: Callable[[int], float], cli: Callable[[], float], runs: int) -> tuple[list[float], list[float]]:
    """``(ours, theirs)``: ``runs`` timings of each, taking turns at going first."""
    ours, theirs = [], []
    for i in range(runs):
        if i % 2:
            theirs.append(cli())
            ours.append(job(i))
        else:
            ours.append(job(i))
            theirs.append(cli())
    return ours, theirs
