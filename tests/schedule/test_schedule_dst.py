"""Schedules across real DST transitions, found by scanning zoneinfo rather than listed by hand.

For every zone and year the transitions are derived from ``utcoffset`` changes.  Around each one
the slots of hourly and sub-hourly schedules are compared with an independent oracle built from
the wall-clock rule the scheduler promises:

* a wall time inside a spring-forward gap fires once, at the first instant after the gap;
* a wall time inside a fall-back overlap fires once, on its first occurrence;
* every other wall time fires exactly once, at the only instant it names.

Daily schedules placed inside each gap and overlap must fire exactly once per local calendar day,
and ``slot_for_date``/``logical_date``/``interval_of`` must round-trip across the transitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from scheduler.schedule import Schedule

UTC = UTC
TICK = timedelta(microseconds=1)
YEARS = range(2020, 2031)
ZONES = {
    "Europe/Berlin": YEARS,
    "America/New_York": YEARS,
    "Australia/Sydney": YEARS,  # southern hemisphere: spring forward in October
    "Europe/London": YEARS,  # transitions at 01:00 UTC, gap 01:00-02:00 local
    "Australia/Lord_Howe": YEARS,  # 30-minute shift
    "America/Santiago": YEARS,  # transitions at local midnight
    "America/Sao_Paulo": range(2017, 2031),  # midnight DST until 2019, none since
    "Asia/Kolkata": YEARS,  # no DST at all
}
SUB_DAILY = ("0 * * * *", "*/15 * * * *", "*/30 * * * *")


@dataclass(frozen=True)
class Transition:
    """One utcoffset change: at instant ``at`` the offset goes from ``before`` to ``after``."""

    zone: str
    at: datetime
    before: timedelta
    after: timedelta

    @property
    def wall_before(self) -> datetime:
        """The (naive) wall clock just before the change, extrapolated to the instant itself."""
        return (self.at + self.before).replace(tzinfo=None)

    @property
    def wall_after(self) -> datetime:
        return (self.at + self.after).replace(tzinfo=None)

    @property
    def is_gap(self) -> bool:
        return self.after > self.before

    def skipped_or_repeated(self) -> tuple[datetime, datetime]:
        """The half-open wall range that does not exist (gap) or occurs twice (overlap)."""
        return (self.wall_before, self.wall_after) if self.is_gap else (self.wall_after, self.wall_before)

    def __str__(self) -> str:
        kind = "gap" if self.is_gap else "overlap"
        start, end = self.skipped_or_repeated()
        return f"{self.zone} {kind} {start:%Y-%m-%d %H:%M}-{end:%H:%M}"


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


@cache
def transitions(zone: str, year: int) -> tuple[Transition, ...]:
    """Every utcoffset change in ``year`` (UTC), to the second, by a daily scan and bisection."""
    tz = ZoneInfo(zone)
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    while day < end:
        following = day + timedelta(days=1)
        before, after = _offset(tz, day), _offset(tz, following)
        if before != after:
            lo, hi = day, following  # offset(lo) == before, offset(hi) == after
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if _offset(tz, mid) == before:
                    lo = mid
                else:
                    hi = mid
            found.append(Transition(zone, hi, before, after))
        day = following
    return tuple(found)


def nearby_transitions(zone: str, year: int) -> list[Transition]:
    return [t for y in (year - 1, year, year + 1) for t in transitions(zone, y)]


def oracle_instant(naive: datetime, zone: str, known: Iterable[Transition]) -> datetime:
    """When a wall-clock slot fires, by the documented rule (independent of scheduler code)."""
    for tr in known:
        if tr.is_gap and tr.wall_before <= naive < tr.wall_after:
            return tr.at
    return naive.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)  # fold=0: first occurrence


def cron_minutes(expr: str) -> list[int]:
    minute = expr.split()[0]
    if minute.startswith("*/"):
        return list(range(0, 60, int(minute[2:])))
    return [int(minute)]


def oracle_slots(expr: str, zone: str, start: datetime, end: datetime, known: list[Transition]) -> list[datetime]:
    """Slots of an hourly/sub-hourly ``M * * * *`` schedule in ``(start, end]``."""
    tz = ZoneInfo(zone)
    gaps = [tr for tr in known if tr.is_gap and start - timedelta(days=1) < tr.at < end + timedelta(days=1)]
    # Every wall hour that any instant of the window can read (offsets differ by at most a day).
    hour = (start.astimezone(tz) - timedelta(hours=3)).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    last = (end.astimezone(tz) + timedelta(hours=3)).replace(tzinfo=None)
    out = set()
    while hour <= last:
        for minute in cron_minutes(expr):
            instant = oracle_instant(hour.replace(minute=minute), zone, gaps)
            if start < instant <= end:
                out.add(instant)
        hour += timedelta(hours=1)
    return sorted(out)


def schedule_slots(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    out = []
    for slot in schedule.iter_after(start):
        if slot > end:
            break
        out.append(slot)
    return out


def sample_times(tr: Transition, expected: list[datetime]) -> Iterator[datetime]:
    """Instants to ask about: a grid around the transition plus every edge near it."""
    for minutes in (-120, -61, -31, -1, 29, 59, 89, 120):
        yield tr.at + timedelta(minutes=minutes, seconds=7)
    for edge in (tr.at, *[s for s in expected if abs(s - tr.at) <= timedelta(minutes=20)]):
        yield from (edge - TICK, edge)


ZONE_YEARS = [(zone, year) for zone, years in ZONES.items() for year in years]


def _id(value: object) -> str:
    return str(value)


# --- the transitions themselves --------------------------------------------------------------------
def test_transition_scan_finds_the_known_shapes() -> None:
    """Guards the oracle: the scan must see the transitions every later test relies on."""
    berlin = transitions("Europe/Berlin", 2026)
    assert [(str(t), t.at) for t in berlin] == [
        ("Europe/Berlin gap 2026-03-29 02:00-03:00", datetime(2026, 3, 29, 1, tzinfo=UTC)),
        ("Europe/Berlin overlap 2026-10-25 02:00-03:00", datetime(2026, 10, 25, 1, tzinfo=UTC)),
    ]
    assert [t.after - t.before for t in transitions("Australia/Lord_Howe", 2026)] == [
        timedelta(minutes=-30), timedelta(minutes=30)]
    assert [t.is_gap for t in transitions("Australia/Sydney", 2026)] == [False, True]  # April back, October forward
    assert transitions("Asia/Kolkata", 2026) == ()
    assert transitions("America/Sao_Paulo", 2020) == ()
    assert [str(t) for t in transitions("America/Sao_Paulo", 2018)] == [
        "America/Sao_Paulo overlap 2018-02-17 23:00-00:00", "America/Sao_Paulo gap 2018-11-04 00:00-01:00"]
    for zone, years in ZONES.items():
        if zone not in ("Asia/Kolkata", "America/Sao_Paulo"):
            assert all(len(transitions(zone, y)) == 2 for y in years), zone


# --- hourly and sub-hourly schedules around every transition ---------------------------------------
@pytest.mark.parametrize(("zone", "year"), ZONE_YEARS, ids=lambda v: str(v))
def test_sub_daily_slots_match_the_wall_clock_rule(zone: str, year: int) -> None:
    known = nearby_transitions(zone, year)
    around = list(transitions(zone, year)) or [Transition(zone, datetime(year, 6, 15, 12, tzinfo=UTC),
                                                          timedelta(0), timedelta(0))]
    for expr in SUB_DAILY:
        schedule = Schedule(cron=expr, tz=zone)
        for tr in around:
            start, end = tr.at - timedelta(hours=4), tr.at + timedelta(hours=4)
            got = schedule_slots(schedule, start, end)
            expected = oracle_slots(expr, zone, start, end, known)
            assert got == expected, f"{expr} around {tr}"
            assert all(a < b for a, b in pairwise(got)), "slots must strictly increase in UTC"
            walls = [s.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for s in got]
            assert len(set(walls)) == len(walls), "a wall-clock slot fired twice"
            if tr.before != tr.after:
                wall_start, wall_end = tr.skipped_or_repeated()
                if tr.is_gap and _walls(expr, wall_start, wall_end):
                    assert got.count(tr.at) == 1, "gap slots collapse into one run at the end of the gap"
                if not tr.is_gap:
                    second_pass = [s for s in got if tr.at <= s < tr.at + (tr.before - tr.after)]
                    assert second_pass == [], "nothing fires during the repeated wall time's second pass"
            for t in sample_times(tr, expected):
                following = schedule.next_after(t)
                previous = schedule.prev_at_or_before(t)
                assert following is not None and following > t
                assert following == min(s for s in expected if s > t), f"next_after({t}) for {expr}"
                assert previous is not None and previous <= t
                assert previous == max(s for s in expected if s <= t), f"prev_at_or_before({t}) for {expr}"
                assert schedule.next_after(previous) is not None and schedule.next_after(previous) > t  # type: ignore[operator]


def _walls(expr: str, start: datetime, end: datetime) -> list[datetime]:
    """Wall times named by ``M * * * *`` in ``[start, end)``."""
    out = []
    t = start.replace(minute=0)
    while t < end:
        for minute in cron_minutes(expr):
            w = t.replace(minute=minute)
            if start <= w < end:
                out.append(w)
        t += timedelta(hours=1)
    return out


# --- daily schedules inside every gap and overlap -------------------------------------------------
def daily_cases() -> list[tuple[Transition, str]]:
    """For each transition, a daily schedule at the middle of its gap or overlap."""
    cases = []
    for zone, years in ZONES.items():
        for year in years:
            for tr in transitions(zone, year):
                start, end = tr.skipped_or_repeated()
                mid = start + (end - start) / 2
                cases.append((tr, f"{mid.minute} {mid.hour} * * *"))
    return cases


@pytest.mark.parametrize(("tr", "expr"), daily_cases(), ids=lambda v: str(v).replace(" ", "_"))
def test_daily_slot_in_gap_or_overlap_fires_once_per_local_day(tr: Transition, expr: str) -> None:
    tz = ZoneInfo(tr.zone)
    schedule = Schedule(cron=expr, tz=tr.zone)
    wall_start, wall_end = tr.skipped_or_repeated()
    wall = wall_start + (wall_end - wall_start) / 2
    day_of = wall.date()
    first_day, last_day = day_of - timedelta(days=3), day_of + timedelta(days=3)
    start = datetime.combine(first_day, time(0), tzinfo=tz).astimezone(UTC)
    slots = [s for s in schedule_slots(schedule, start, start + timedelta(days=8))
             if first_day <= s.astimezone(tz).date() <= last_day]
    days = [s.astimezone(tz).date() for s in slots]
    assert days == [first_day + timedelta(days=i) for i in range(7)], "exactly one run per local day"
    on_the_day = slots[days.index(day_of)]
    if tr.is_gap:
        assert on_the_day == tr.at, "a wall time in the gap fires at the first instant after it"
    else:
        assert on_the_day == wall.replace(tzinfo=tz, fold=0).astimezone(UTC) < tr.at, "first occurrence"
    # Data intervals tile the days: each slot covers the time since the previous one.
    for previous, slot in pairwise(slots):
        assert schedule.interval_of(slot) == (previous, slot)
        assert schedule.prev_at_or_before(slot) == slot
        assert schedule.prev_at_or_before(slot - TICK) == previous
        assert schedule.next_after(previous) == slot
    for offset in range(-2, 3):
        day = day_of + timedelta(days=offset)
        slot = schedule.slot_for_date(day)
        assert schedule.logical_date(slot) == day
        assert slot.astimezone(tz).date() == day + timedelta(days=1)


@pytest.mark.parametrize(("zone", "year"), [(z, y) for z, y in ZONE_YEARS if transitions(z, y)], ids=_id)
def test_hourly_slot_for_date_round_trips_across_transitions(zone: str, year: int) -> None:
    schedule = Schedule(cron="0 * * * *", tz=zone)
    tz = ZoneInfo(zone)
    for tr in transitions(zone, year):
        for offset in (-1, 0, 1):
            day = tr.wall_after.date() + timedelta(days=offset)
            slot = schedule.slot_for_date(day)
            assert schedule.logical_date(slot) == day
            start, end = schedule.interval_of(slot)
            assert start.astimezone(tz).date() == day and start < end == slot


# --- readable examples of the same rules ----------------------------------------------------------
@pytest.mark.parametrize(("zone", "expr", "after", "expected"), [
    # Berlin spring forward 2026-03-29 02:00 -> 03:00: 02:30 does not exist, runs at 03:00 CEST.
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    # Berlin fall back 2026-10-25 03:00 -> 02:00: 02:30 happens twice, runs at the first (CEST).
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    # ... and not again at the second 02:30 (CET): the next run is the following day.
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
     datetime(2026, 10, 26, 1, 30, tzinfo=UTC)),
    # New York fall back 2026-11-01 02:00 -> 01:00: 01:30 runs once, in EDT.
    ("America/New_York", "30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=UTC),
     datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
    ("America/New_York", "30 1 * * *", datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
     datetime(2026, 11, 2, 6, 30, tzinfo=UTC)),
    # New York spring forward 2026-03-08: 02:30 runs at 03:00 EDT.
    ("America/New_York", "30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    # Lord Howe spring forward 2026-10-04 02:00 -> 02:30 (+10:30 -> +11).
    ("Australia/Lord_Howe", "15 2 * * *", datetime(2026, 10, 3, 0, tzinfo=UTC),
     datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
    # Hourly in the Berlin overlap: 02:00 CEST, then 03:00 CET two hours later in UTC.
    ("Europe/Berlin", "0 * * * *", datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),
])
def test_examples(zone: str, expr: str, after: datetime, expected: datetime) -> None:
    assert Schedule(cron=expr, tz=zone).next_after(after) == expected


def test_apscheduler_cron_trigger_repeats_and_sticks_in_the_berlin_overlap() -> None:
    """Why the wrapper exists: APScheduler 3's CronTrigger, driven the way its scheduler drives it
    (``get_next_fire_time(previous, now)`` right after each fire), fires 02:30 twice on
    2026-10-25 and then keeps returning a time that is not after ``now``.  If this test starts
    failing, APScheduler fixed it and ``scheduler.schedule`` could lean on it more.
    """
    tz = ZoneInfo("Europe/Berlin")
    trigger = CronTrigger(hour=2, minute=30, timezone=tz)
    now = datetime(2026, 10, 24, 12, tzinfo=UTC)
    fired: list[datetime] = []
    previous = None
    for _ in range(3):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        fired.append(fire.astimezone(UTC))
        previous, now = fire, fire + TICK
    first, second, third = fired
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert second == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET: the same wall time again
    assert third <= second + TICK  # not after `now`: a loop would spin or fire again

    ours = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    slots = list(_take(ours.iter_after(datetime(2026, 10, 24, 12, tzinfo=UTC)), 3))
    assert slots == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
                     datetime(2026, 10, 27, 1, 30, tzinfo=UTC)]
    for slot in slots:
        assert ours.next_after(slot) is not None and ours.next_after(slot) > slot  # type: ignore[operator]


def _take(items: Iterator[datetime], n: int) -> Iterator[datetime]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def test_every_local_day_of_the_decade_has_one_daily_run_in_berlin() -> None:
    """A whole-decade sweep for one zone: 02:30 daily fires once on each local day, 2020-2030."""
    tz = ZoneInfo("Europe/Berlin")
    schedule = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    start = datetime(2020, 1, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(2031, 1, 1, tzinfo=tz).astimezone(UTC)
    days = [s.astimezone(tz).date() for s in schedule_slots(schedule, start, end)]
    assert days == [date(2020, 1, 1) + timedelta(days=i) for i in range((date(2031, 1, 1) - date(2020, 1, 1)).days)]
