"""When a job fires: cron or interval schedules in a timezone, DST-exact, with jitter and catch-up.

Slots are aware UTC datetimes and strictly increasing.  Cron expressions are evaluated on the
*wall clock* of the job's timezone (cronsim matches the fields on a wall time given as UTC, so it
applies no DST rules of its own), and each wall-clock slot is then mapped to one instant:

* a wall time inside a spring-forward gap fires once, at the first instant after the gap (several
  gap slots, and a slot at the gap's end, collapse into that one instant);
* a wall time inside a fall-back overlap fires once, on its first occurrence.

cronsim's own DST handling (Debian cron's) would fire ``0 * * * *`` twice in the overlap, and
APScheduler 3's CronTrigger repeats 02:30 there and goes backwards in UTC; hence the mapping here.
Interval schedules (``every``) are anchored at the Unix epoch, so their slots do not depend on
when the daemon started.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from scheduler.config.durations import format_duration

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The documented syntax: ``*``, ``?``, numbers or three-letter names, ranges, lists and steps.
# cronsim also reads ``L``, ``W`` and ``#``; they stay out until documented and tested.
_ITEM = r"(?:\*|\?|(?:\d+|[a-z]{3})(?:-(?:\d+|[a-z]{3}))?)(?:/\d+)?"
_FIELD = re.compile(rf"{_ITEM}(?:,{_ITEM})*", re.IGNORECASE)
# The six fields in order, by the names cronsim's errors use ("Bad day-of-week"), and their values.
_ALLOWED = {"second": "0-59", "minute": "0-59", "hour": "0-23", "day-of-month": "1-31",
            "month": "1-12 or jan-dec", "day-of-week": "0-7 or sun-sat"}
_NAMES = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}
_NAMES |= {name: i for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_RANGE_STEP = re.compile(r"(\w+)-(\w+)/\d+")
CatchupPolicy = Literal["none", "latest", "all"]


def _drop_idle_step(match: re.Match[str]) -> str:
    """``5-5/2`` is just ``5``: cronsim reads a one-value range with a step as ``5/2`` (5, 7, 9, ...)."""
    low, high = (int(x) if x.isdigit() else _NAMES.get(x.lower()) for x in (match[1], match[2]))
    return match[1] if low is not None and low == high else match[0]


def _cronsim_error(text: str) -> str | None:
    """cronsim's complaint about a 6-field expression (``"Bad minute"``), or ``None``."""
    try:
        CronSim(text, EPOCH)
    except CronSimError as exc:
        return str(exc)
    return None


def parse_cron(expr: str) -> str:
    """Check a 5-field cron (or 6 fields, seconds first, or an @alias); return it as cronsim's 6 fields.

    Like Vixie cron (and cronsim), when both day-of-month and day-of-week are restricted (neither
    starts with ``*``) a day matching *either* fires; otherwise both must match.  Weekday 0 and 7
    are Sunday.  Raises ``ValueError`` with a readable message on bad syntax or a schedule that can
    never fire (``0 0 30 2 *``).
    """
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    if text.startswith("@"):
        raise ValueError(f"unknown alias {expr!r} (use @hourly, @daily, @weekly, @monthly or @yearly)")
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (minute hour day month weekday) or 6 (seconds first), got {len(fields)}")
    if not all(_FIELD.fullmatch(field) for field in fields):
        raise ValueError(f"invalid characters in cron expression {expr!r}")
    for day_field in (3, 5):  # "?" (Quartz's "no specific day") is "*" to cronsim
        fields[day_field] = "*" if fields[day_field] == "?" else fields[day_field]
    text = " ".join(_RANGE_STEP.sub(_drop_idle_step, field) for field in fields)
    error = _cronsim_error(text)
    if error is None:
        return text
    name = error.removeprefix("Bad ")
    if name == "day-of-month" and _cronsim_error(" ".join([*fields[:4], "*", fields[5]])) is None:
        raise ValueError(f"cron expression {expr!r} never fires (no such date)")  # 30 Feb, 31 Apr
    if name in _ALLOWED:
        value = fields[list(_ALLOWED).index(name)]
        raise ValueError(f"invalid cron expression {expr!r}: bad {name} field {value!r} "
                         f"(values {_ALLOWED[name]}, ranges low-high)")
    raise ValueError(f"invalid cron expression {expr!r}: {error}")


class Schedule:
    """When one job fires.  Immutable; all methods are pure functions of their arguments.

    Exactly one of ``cron`` or ``every`` is set, or neither (a job that runs only ``after:`` other
    jobs or by hand; then every query answers ``None``).
    """

    def __init__(self, *, cron: str | None = None, every: timedelta | None = None, tz: str = "UTC",
                 jitter: timedelta = timedelta(0)) -> None:
        if cron is not None and every is not None:
            raise ValueError("use either a cron schedule or an interval, not both")
        if every is not None and every <= timedelta(0):
            raise ValueError("interval must be positive")
        self.cron = cron
        self.every = every
        self.tz = ZoneInfo(tz)
        self.jitter = jitter
        self._cron = parse_cron(cron) if cron is not None else None

    @property
    def is_periodic(self) -> bool:
        return self._cron is not None or self.every is not None

    def describe(self) -> str:
        if self.cron is not None:
            return self.cron
        if self.every is not None:
            return f"every {format_duration(self.every)}"  # as written: "every 10s", not "every 0:00:10"
        return "-"

    # --- wall clock <-> instants -------------------------------------------------------------
    def _wall(self, instant: datetime) -> datetime:
        """The wall-clock reading of ``instant`` in the job's zone, as a fake-UTC datetime."""
        return instant.astimezone(self.tz).replace(tzinfo=UTC, fold=0)

    def _instant(self, wall: datetime) -> datetime:
        """Map a wall-clock time to the instant it fires at (gap: first instant after it; overlap: first)."""
        naive = wall.replace(tzinfo=None)
        first = naive.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if first.astimezone(self.tz).replace(tzinfo=None) == naive:
            return first
        # In a gap: fold=0 applied the pre-transition offset, landing after the transition;
        # fold=1 applied the post-transition offset, landing before it.  Bisect to the transition.
        lo = int(naive.replace(tzinfo=self.tz, fold=1).timestamp())  # before the transition
        hi = int(first.timestamp()) + 1  # after it
        while hi - lo > 1:  # smallest whole second whose wall clock is not before ``naive``
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).replace(tzinfo=None) < naive:
                lo = mid
            else:
                hi = mid
        return datetime.fromtimestamp(hi, UTC)

    # --- queries ----------------------------------------------------------------------------
    def next_after(self, t: datetime) -> datetime | None:
        """The first slot strictly after instant ``t``."""
        if self.every is not None:
            k = (t - EPOCH) // self.every
            return EPOCH + (k + 1) * self.every
        if self._cron is None:
            return None
        # Wall slots after t's wall reading; in a gap's collapse or an overlap's second pass their
        # instants can be at or before t, so skip those.  cronsim stops after 50 years.
        for wall in CronSim(self._cron, self._wall(t)):
            if (instant := self._instant(wall)) > t:
                return instant
        return None

    def first_at_or_after(self, t: datetime) -> datetime | None:
        return self.next_after(t - _TICK)

    def prev_at_or_before(self, t: datetime) -> datetime | None:
        """The last slot at or before ``t`` (``None`` if there is none within 50 years)."""
        if self.every is not None:
            return EPOCH + ((t - EPOCH) // self.every) * self.every
        if self._cron is None:
            return None
        # The last wall slot at or before t's wall reading fires at or before t (instants never
        # decrease with the wall time).  Only in an overlap's second pass can later wall slots
        # have fired before t too (on their first occurrence): step forward over those.
        wall = next(CronSim(self._cron, self._wall(t) + _TICK, reverse=True), None)
        if wall is None:
            return None
        slot = self._instant(wall)
        while (following := self.next_after(slot)) is not None and following <= t:
            slot = following
        return slot

    def iter_after(self, t: datetime) -> Iterator[datetime]:
        """Slots strictly after ``t``, in order."""
        slot = self.next_after(t)
        while slot is not None:
            yield slot
            slot = self.next_after(slot)

    def due_slots(self, last: datetime | None, now: datetime, policy: CatchupPolicy, limit: int,
                  on_time: timedelta) -> list[datetime]:
        """Slots in ``(last, now]`` that should fire now, oldest first.

        A slot no older than ``on_time`` always fires (it is merely late); older slots were missed
        (downtime, a suspended host, a clock jump) and follow ``policy``: ``none`` fires none of
        them, ``latest`` only the newest, ``all`` up to ``limit`` newest.  The work is bounded by
        ``limit`` backwards searches, whatever the distance between ``last`` and ``now``.
        """
        newest = self.prev_at_or_before(now)
        if newest is None or (last is not None and newest <= last):
            return []
        fresh = now - newest <= on_time
        if last is None:
            return [newest] if fresh else []
        if fresh:
            due, cursor = [newest], newest - _TICK
            budget = limit - 1 if policy == "all" else 0
        else:
            due, cursor = [], now
            budget = {"none": 0, "latest": 1, "all": limit}[policy]
        missed: list[datetime] = []
        while len(missed) < budget:
            slot = self.prev_at_or_before(cursor)
            if slot is None or slot <= last:
                break
            missed.append(slot)
            cursor = slot - _TICK
        return sorted(missed) + due

    def interval_of(self, slot: datetime) -> tuple[datetime, datetime]:
        """The data interval a slot covers: from the previous slot to this one.

        Jobs without a periodic schedule cover the 24 hours before their slot.
        """
        if self.is_periodic:
            previous = self.prev_at_or_before(slot - _TICK)
            if previous is not None:
                return previous, slot
        return slot - timedelta(days=1), slot

    def logical_date(self, slot: datetime) -> date:
        return self.interval_of(slot)[0].astimezone(self.tz).date()

    def slot_for_date(self, day: date) -> datetime:
        """The slot whose logical date is ``day`` (used by ``run-job --date`` and backfills)."""
        midnight = self._instant(datetime.combine(day, time(0), tzinfo=UTC))
        if self.is_periodic:
            start = self.first_at_or_after(midnight)
            if start is not None:
                slot = self.next_after(start)
                if slot is not None:
                    return slot
        return self._instant(datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC))

    def latest_slot(self, now: datetime) -> datetime:
        """The slot a run "now" stands for: the most recent one, or today's for jobs without a
        periodic schedule (``run-job`` without ``--date``, ``POST /jobs/NAME/run``)."""
        latest = self.prev_at_or_before(now) if self.is_periodic else None
        return latest if latest is not None else self.slot_for_date(now.astimezone(self.tz).date())

    def jitter_for(self, job: str, slot: datetime) -> timedelta:
        """A stable pseudo-random delay in ``[0, jitter)`` for this job and slot."""
        if not self.jitter:
            return timedelta(0)
        digest = hashlib.blake2b(f"{job}|{slot.isoformat()}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        return timedelta(seconds=self.jitter.total_seconds() * fraction)
