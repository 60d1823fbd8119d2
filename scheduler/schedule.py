"""When a job fires: cron or interval schedules in a timezone, DST-exact, with jitter and catch-up.

Slots are aware UTC datetimes and strictly increasing.  Cron expressions are evaluated on the
*wall clock* of the job's timezone (APScheduler's cron fields do the matching on a naive wall
time), and each wall-clock slot is then mapped to one instant:

* a wall time inside a spring-forward gap fires once, at the first instant after the gap (several
  gap slots, and a slot at the gap's end, collapse into that one instant);
* a wall time inside a fall-back overlap fires once, on its first occurrence.

This sidesteps APScheduler 3's CronTrigger DST bugs (repeating 02:30 in the overlap, going
backwards in UTC) while reusing its well-tested field parser.  Interval schedules (``every``) are
anchored at the Unix epoch, so their slots do not depend on when the daemon started.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from scheduler.config.durations import format_duration

UTC = timezone.utc
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
_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_APS_DOW = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # APScheduler 3: 0 = Monday
# Windows for the backwards search of the previous slot; the last bounds how far back we look.
_BACK_WINDOWS = [timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(days=32),
                 timedelta(days=367), timedelta(days=366 * 8 + 2)]
CatchupPolicy = Literal["none", "latest", "all"]


def _dow_value(token: str) -> int:
    token = token.lower()
    if token in _DOW_NAMES:
        return _DOW_NAMES.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"invalid day of week {token!r}")


def _translate_dow(field: str) -> str:
    """Cron's day-of-week (0 or 7 = Sunday, names) to APScheduler 3's (0 = Monday) as a name list."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"invalid step in day of week {part!r}")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _dow_value(a), _dow_value(b)
            if b == "7":
                last = 7
            if last < first:
                raise ValueError(f"invalid day-of-week range {base!r}")
        else:
            first = _dow_value(base)
            last = 6 if step_text else first
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_APS_DOW[(d - 1) % 7] for d in sorted(days))


def parse_cron(expr: str) -> BaseTrigger:
    """Parse a 5-field cron (or 6 fields, seconds first, or an @alias) into a wall-clock trigger.

    Like Vixie cron, when both day-of-month and day-of-week are restricted (neither starts with
    ``*``) a day matching *either* fires; otherwise both must match.  Raises ``ValueError`` with a
    readable message on bad syntax or a schedule that can never fire (``0 0 30 2 *``).
    """
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    if text.startswith("@"):
        raise ValueError(f"unknown alias {expr!r} (use @hourly, @daily, @weekly, @monthly or @yearly)")
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (minute hour day month weekday) or 6 (seconds first), got {len(fields)}")
    second, minute, hour, day, month, dow = fields
    if re.search(r"[^\d*/,\-a-zA-Z?]", "".join(fields)):
        raise ValueError(f"invalid characters in cron expression {expr!r}")
    try:
        aps_dow = _translate_dow(dow)
        common = dict(second=second, minute=minute, hour=hour, month=month, timezone=UTC)
        trigger: BaseTrigger
        if not day.startswith(("*", "?")) and not dow.startswith(("*", "?")):
            trigger = OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=aps_dow, **common)])
        else:
            trigger = CronTrigger(day=day.replace("?", "*"), day_of_week=aps_dow, **common)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from None
    # Every valid cron expression fires within 28 years of any date (the Gregorian weekday cycle).
    if trigger.get_next_fire_time(None, datetime(2000, 1, 1, tzinfo=UTC)) is None:
        raise ValueError(f"cron expression {expr!r} never fires (no such date)")
    return trigger


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
        self._trigger = parse_cron(cron) if cron is not None else None

    @property
    def is_periodic(self) -> bool:
        return self._trigger is not None or self.every is not None

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
        if self._trigger is None:
            return None
        wall = self._wall(t)
        for _ in range(100_000):
            wall = self._trigger.get_next_fire_time(None, wall + _TICK)
            if wall is None:
                return None
            instant = self._instant(wall)
            if instant > t:
                return instant
        raise RuntimeError("no slot found")  # pragma: no cover - cron fields always advance

    def first_at_or_after(self, t: datetime) -> datetime | None:
        return self.next_after(t - _TICK)

    def prev_at_or_before(self, t: datetime) -> datetime | None:
        """The last slot at or before ``t`` (``None`` if there is none within ~8 years)."""
        if self.every is not None:
            return EPOCH + ((t - EPOCH) // self.every) * self.every
        if self._trigger is None:
            return None
        for window in _BACK_WINDOWS:
            slot = self.first_at_or_after(t - window)
            if slot is not None and slot <= t:
                while (following := self.next_after(slot)) is not None and following <= t:
                    slot = following
                return slot
        return None

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
