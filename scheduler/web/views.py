"""What the pages show, read from the config and the state store: plain data for the templates.

Everything here only reads, through :class:`Backend` (the config in force, the state store and
the redactor), so the same views serve the daemon's endpoint and ``scheduler web``.  "Running
now" comes from the store's ``running`` records, so every replica's runs show, wherever the page
is served.  Times are given in the job's timezone with the UTC instant beside them
(:class:`When`), for the ``title`` the page shows on hover.

Output lines are stored masked (the runner masks them); error texts and pause reasons are masked
again here with the current secrets, so a secret added to the config later is hidden too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from scheduler import clock
from scheduler.config.compiled import Config
from scheduler.status import RunStatus
from scheduler.web.chart import Chart, build_chart
from scheduler.web.words import ScheduleText, describe

if TYPE_CHECKING:
    from scheduler.state import RunRecord
    from scheduler.stores.protocol import StateStore
    from scheduler.stores.records import JobControl

STRIP = 20  # outcomes in the job list's strip
HISTORY = 50  # runs on the job page
MAX_LINES = 50_000  # output lines a run page shows at most (state.max_output bounds them anyway)


@dataclass
class Backend:
    """Where the pages read and write: the config in force, the store, and the masker."""

    config: Callable[[], Config]
    store: StateStore
    redact: Callable[[], Callable[[str], str]]
    served_by: str  # "daemon" or "web": shown in the footer


@dataclass(frozen=True)
class When:
    local: str  # "2026-12-02 11:00:00 CET" in the job's timezone
    utc: str  # "2026-12-02 10:00:00 UTC"
    iso: str


def when(t: datetime | None, tz: ZoneInfo) -> When | None:
    if t is None:
        return None
    local = t.astimezone(tz)
    return When(local=local.strftime("%Y-%m-%d %H:%M:%S %Z"),
                utc=t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), iso=t.astimezone(UTC).isoformat())


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class RunRow:
    id: int
    status: str
    trigger: str
    logical_date: str
    attempt: int
    started: When | None
    ended: When | None
    duration: str
    rows_written: Any
    rows_rejected: Any
    exit_code: int | None
    signal: int | None
    error: str


@dataclass(frozen=True)
class JobRow:
    name: str
    kind: str
    description: str
    enabled: bool
    schedule: ScheduleText
    timezone: str
    next: list[When]
    last: RunRow | None
    strip: list[RunRow]  # oldest first
    running: list[int]  # ids of running runs
    paused: bool
    paused_reason: str
    control: JobControl | None


@dataclass(frozen=True)
class JobPage:
    job: JobRow
    spec: str
    history: list[RunRow]
    chart: Chart | None
    paused_since: When | None
    paused_by: str


@dataclass(frozen=True)
class OutputLineView:
    seq: int
    stream: str
    line: str
    ts: When


@dataclass(frozen=True)
class RunPage:
    job: str
    timezone: str
    run: RunRow
    slot: When | None
    lines: list[OutputLineView] = field(default_factory=list)
    running: bool = False
    last_seq: int = 0
    job_known: bool = True


def run_row(record: RunRecord, tz: ZoneInfo, redact: Callable[[str], str]) -> RunRow:
    metrics = record.metrics or {}
    return RunRow(id=record.id, status=str(record.status), trigger=record.trigger,
                  logical_date=record.logical_date.isoformat(), attempt=record.attempt,
                  started=when(record.started_at, tz), ended=when(record.ended_at, tz),
                  duration=duration_text(record.duration),
                  rows_written=metrics.get("rows_written", record.rows),
                  rows_rejected=metrics.get("rows_rejected"), exit_code=record.exit_code, signal=record.signal,
                  error=redact(record.error) if record.error else "")


def job_row(backend: Backend, name: str, now: datetime, controls: dict[str, JobControl],
            history: list[RunRecord] | None = None) -> JobRow:
    from scheduler.planner import next_fire_times

    config = backend.config()
    redact = backend.redact()
    spec = config.jobs[name]
    schedule = config.schedules[name]
    records = history if history is not None else backend.store.history(name, STRIP)
    finished = [r for r in records if r.status is not RunStatus.RUNNING]
    control = controls.get(name)
    paused = control is not None and control.paused
    return JobRow(
        name=name, kind=spec.kind, description=redact(spec.description), enabled=spec.enabled,
        schedule=describe(schedule, spec.after), timezone=spec.timezone,
        next=[w for t in (next_fire_times(config, name, now, 3) if spec.enabled else [])
              if (w := when(t, schedule.tz)) is not None],
        last=run_row(records[0], schedule.tz, redact) if records else None,
        strip=[run_row(r, schedule.tz, redact) for r in reversed(finished[:STRIP])],
        running=[r.id for r in records if r.status is RunStatus.RUNNING],
        paused=paused, paused_reason=redact(control.reason or "") if paused and control else "",
        control=control if paused else None,
    )


def job_rows(backend: Backend) -> list[JobRow]:
    now = clock.now()
    controls = backend.store.job_controls()
    return [job_row(backend, name, now, controls) for name in backend.config().jobs]


def job_page(backend: Backend, name: str, limit: int = HISTORY) -> JobPage:
    from scheduler.web.spec import spec_yaml

    config = backend.config()
    redact = backend.redact()
    tz = config.schedules[name].tz
    records = backend.store.history(name, max(limit, STRIP))
    row = job_row(backend, name, clock.now(), backend.store.job_controls(), records[:STRIP])
    control = row.control
    return JobPage(job=row, spec=spec_yaml(config.jobs[name], redact),
                   history=[run_row(r, tz, redact) for r in records[:limit]], chart=build_chart(records),
                   paused_since=when(control.changed_at, tz) if control else None,
                   paused_by=redact(control.changed_by) if control else "")


def run_page(backend: Backend, record: RunRecord) -> RunPage:
    config = backend.config()
    redact = backend.redact()
    known = record.job in config.jobs
    tz = config.schedules[record.job].tz if known else ZoneInfo("UTC")
    lines = output_lines(backend, record.id, 0, MAX_LINES, tz)
    return RunPage(job=record.job, timezone=str(tz), run=run_row(record, tz, redact), slot=when(record.slot, tz),
                   lines=lines, running=record.status is RunStatus.RUNNING,
                   last_seq=lines[-1].seq if lines else 0, job_known=known)


def output_lines(backend: Backend, run_id: int, after: int, limit: int, tz: ZoneInfo) -> list[OutputLineView]:
    """The run's stored lines after ``seq`` ``after``, at most ``limit``, read in pages."""
    out: list[OutputLineView] = []
    page = 5000
    redact = backend.redact()  # stored masked; masked again with the secrets in force now
    while len(out) < limit:
        lines = backend.store.read_output(run_id, after, min(page, limit - len(out)))
        for line in lines:
            stamp = when(line.ts, tz)
            assert stamp is not None
            out.append(OutputLineView(seq=line.seq, stream=line.stream, line=redact(line.line), ts=stamp))
        if len(lines) < page:
            break
        after = lines[-1].seq
    return out


def output_json(backend: Backend, record: RunRecord, after: int, limit: int = 2000) -> dict[str, Any]:
    """The JSON the run page polls: lines after ``after`` and whether the run still runs.

    The status is read before the lines: a run seen finished has stored all its output, so the
    page may stop polling after this answer."""
    config = backend.config()
    tz = config.schedules[record.job].tz if record.job in config.jobs else ZoneInfo("UTC")
    lines = output_lines(backend, record.id, after, limit, tz)
    return {"run": record.id, "status": str(record.status), "running": record.status is RunStatus.RUNNING,
            "lines": [{"seq": v.seq, "stream": v.stream, "line": v.line, "ts": v.ts.local, "utc": v.ts.utc}
                      for v in lines],
            "after": lines[-1].seq if lines else after, "more": len(lines) >= limit}
