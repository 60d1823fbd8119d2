"""The job page's chart: duration (bars) and rows written (a line) over the last runs.

Computed here as plain coordinates in a fixed ``viewBox`` and drawn by the template as inline SVG,
so it needs no JavaScript and no script library; each bar and point has a ``<title>`` for hover.
Runs that never ran (``skipped``) or still run are left out.  Each series is scaled to its own
maximum (two axes, labelled left and right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.state import RunRecord

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 56, 10, 22  # margins for the axis labels
MAX_RUNS = 50


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    status: str
    title: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    points: tuple[Point, ...]
    max_duration: str
    max_rows: str
    plot: tuple[float, float, float, float]  # x0, y0, x1, y1 of the plot area

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    if value < 1:
        return f"{value:.2f}s"
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"


def _count(value: int) -> str:
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def build_chart(records: Sequence[RunRecord], limit: int = MAX_RUNS) -> Chart | None:
    """The chart of the newest ``limit`` finished runs in ``records`` (newest first), oldest at the
    left; None when no run has a duration."""
    runs = [r for r in records if r.status not in (RunStatus.SKIPPED, RunStatus.RUNNING) and r.duration is not None]
    runs = list(reversed(runs[:limit]))
    if not runs:
        return None
    x0, y0, x1, y1 = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    slot = (x1 - x0) / len(runs)
    bar = min(max(slot * 0.7, 1.0), 28.0)
    top_duration = max(r.duration or 0.0 for r in runs) or 1.0
    with_rows = [r for r in runs if r.rows is not None]
    top_rows = max((r.rows or 0 for r in with_rows), default=0) or 1
    bars: list[Bar] = []
    points: list[Point] = []
    for i, run in enumerate(runs):
        duration = run.duration or 0.0
        height = (y1 - y0) * duration / top_duration
        when = run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC") if run.started_at else run.logical_date.isoformat()
        bars.append(Bar(x=x0 + (i + 0.5) * slot - bar / 2, y=y1 - height, width=bar, height=height,
                        status=str(run.status), title=f"run {run.id} ({run.status}) {when}: {_seconds(duration)}"))
        if run.rows is not None:
            points.append(Point(x=x0 + (i + 0.5) * slot, y=y1 - (y1 - y0) * run.rows / top_rows,
                                title=f"run {run.id}: {run.rows} rows"))
    return Chart(width=WIDTH, height=HEIGHT, bars=tuple(bars), points=tuple(points),
                 max_duration=_seconds(top_duration), max_rows=_count(top_rows) if with_rows else "",
                 plot=(x0, y0, x1, y1))
