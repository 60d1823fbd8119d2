"""The cron library under :class:`Schedule` (cronsim): seconds-first expressions across DST, the
syntax accepted, long backwards searches, and what importing the schedule module costs.

Wall-clock matching is cronsim's; the DST mapping is ours.  The oracle here steps through every
second of the real instants around Berlin's 2026 transitions and applies the documented rule: a
wall time fires on its first occurrence only, and wall times inside a gap fire once, at the first
instant after the gap.
"""

from __future__ import annotations

import bisect
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from scheduler.schedule import Schedule

UTC = UTC
TICK = timedelta(microseconds=1)
BERLIN = ZoneInfo("Europe/Berlin")
GAP = datetime(2026, 3, 29, 1, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST: wall 02:00-03:00 is skipped
OVERLAP = datetime(2026, 10, 25, 1, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET: wall 02:00-03:00 twice
Match = Callable[[datetime], bool]


def oracle(match: Match, start: datetime, end: datetime) -> list[datetime]:
    """Slots in ``(start, end]`` by the documented rule, found second by second."""
    out: set[datetime] = set()
    instant = start.replace(microsecond=0) + timedelta(seconds=1)
    while instant <= end:
        wall = instant.astimezone(BERLIN)
        if wall.fold == 0 and match(wall.replace(tzinfo=None)):
            out.add(instant)
        instant += timedelta(seconds=1)
    if start < GAP <= end:
        gap_walls = (datetime(2026, 3, 29, 2) + timedelta(seconds=s) for s in range(3600))
        if any(match(w) for w in gap_walls):
            out.add(GAP)
    return sorted(out)


CASES: list[tuple[str, Match]] = [
    ("10,40 * * * * *", lambda w: w.second in (10, 40)),
    ("*/20 * 2 * * *", lambda w: w.hour == 2 and w.second % 20 == 0),  # only inside the shifted hour
    ("30 59 1,2 * * *", lambda w: w.hour in (1, 2) and (w.minute, w.second) == (59, 30)),
]


@pytest.mark.parametrize("transition", [GAP, OVERLAP], ids=["gap", "overlap"])
@pytest.mark.parametrize(("expr", "match"), CASES, ids=[c[0] for c in CASES])
def test_seconds_first_slots_follow_the_wall_clock_rule(transition: datetime, expr: str, match: Match) -> None:
    assert transition.astimezone(BERLIN).utcoffset() != (transition - TICK).astimezone(BERLIN).utcoffset()
    schedule = Schedule(cron=expr, tz="Europe/Berlin")
    start, end = transition - timedelta(minutes=20), transition + timedelta(minutes=80)
    expected = oracle(match, start, end)
    got = []
    for slot in schedule.iter_after(start):
        if slot > end:
            break
        got.append(slot)
    assert got == expected
    inner = [start + timedelta(minutes=7 * k, seconds=k) for k in range(1, 12)]
    edges = [e for s in expected[:: max(1, len(expected) // 12)] + [transition] for e in (s - TICK, s)]
    for t in inner + edges:
        i = bisect.bisect_right(expected, t)
        previous, following = schedule.prev_at_or_before(t), schedule.next_after(t)
        assert previous is not None and following is not None
        assert previous == expected[i - 1] if i > 0 else previous <= start, f"prev_at_or_before({t})"
        assert following == expected[i] if i < len(expected) else following > end, f"next_after({t})"


def test_every_second_in_the_overlap_fires_once_per_wall_second() -> None:
    schedule = Schedule(cron="* * * * * *", tz="Europe/Berlin")
    slots = list(islice(schedule.iter_after(OVERLAP - timedelta(seconds=3)), 4))
    # 02:59:58 and 02:59:59 CEST; the repeated 02:00-03:00 (CET) is skipped, so 03:00:00 CET,
    # an hour later in UTC, is next.
    assert slots == [OVERLAP - timedelta(seconds=2), OVERLAP - timedelta(seconds=1),
                     OVERLAP + timedelta(hours=1), OVERLAP + timedelta(hours=1, seconds=1)]
    second_pass = OVERLAP + timedelta(minutes=30)
    assert schedule.prev_at_or_before(second_pass) == OVERLAP - timedelta(seconds=1)
    assert schedule.next_after(second_pass) == OVERLAP + timedelta(hours=1)


# --- accepted syntax ----------------------------------------------------------------------------
@pytest.mark.parametrize("expr", [
    "0 0 L * *", "0 0 LW * *", "0 0 15W * *", "0 0 * * 5L", "0 0 * * 5#2",  # cronsim extras, not documented
    "? * * * *", "0 ? * * *", "0 0 * ? *",  # "?" only stands for a day field
    "0 0 * * mon-xyz", "0 0 * jan-foo *", "0 0 * * jan", "0 0 * mon *", "0 0 last * *",
])
def test_syntax_outside_the_documented_set_is_rejected(expr: str) -> None:
    with pytest.raises(ValueError):
        Schedule(cron=expr)


@pytest.mark.parametrize(("expr", "same_as"), [
    ("0 0 ? * 1", "0 0 * * 1"), ("0 0 1 * ?", "0 0 1 * *"), ("0 0 * JAN-mar SUN", "0 0 * 1-3 0"),
    ("0 0 0 * * *", "0 0 * * *"), ("0 */15 * * * *", "*/15 * * * *"), ("*/30 * * * * *", "0,30 * * * * *"),
    # A one-value range with a step is that value (a step longer than its range adds nothing).
    ("0 0 * * 7-7/2", "0 0 * * 0"), ("0 0 * * 4-4/3", "0 0 * * 4"), ("0 0 * * mon-mon/2,fri", "0 0 * * 1,5"),
    ("59-59/3 * * * *", "59 * * * *"), ("10-10/2 * * * *", "10 * * * *"), ("0 0 1-1/5 * *", "0 0 1 * *"),
    ("0 0 * jun-jun/2 *", "0 0 * 6 *"),
])
def test_equivalent_spellings_fire_alike(expr: str, same_as: str) -> None:
    a, b = Schedule(cron=expr, tz="Europe/Berlin"), Schedule(cron=same_as, tz="Europe/Berlin")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert list(islice(a.iter_after(start), 20)) == list(islice(b.iter_after(start), 20))
    assert a.prev_at_or_before(start) == b.prev_at_or_before(start)


# --- long searches --------------------------------------------------------------------------------
def test_rare_slots_are_found_in_both_directions() -> None:
    leap = Schedule(cron="0 0 29 2 *", tz="America/New_York")
    t = datetime(2031, 6, 1, tzinfo=UTC)
    assert leap.prev_at_or_before(t) == datetime(2028, 2, 29, 5, tzinfo=UTC)
    assert leap.next_after(t) == datetime(2032, 2, 29, 5, tzinfo=UTC)
    friday_or_13th = Schedule(cron="0 0 13 * 5")  # Vixie OR: every Friday and every 13th
    june = [datetime(2026, 6, day, tzinfo=UTC) for day in (12, 13)]  # Friday 12th, Saturday 13th
    assert friday_or_13th.prev_at_or_before(june[1] + timedelta(seconds=1)) == june[1]
    assert friday_or_13th.prev_at_or_before(june[1] - timedelta(hours=1)) == june[0]


def test_a_backwards_search_does_not_walk_the_slots_between(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every second of January, asked about in December: the previous slot is a few calls away,
    not one call per slot of the month in between."""
    calls = [0]
    original = Schedule.next_after

    def counting(self: Schedule, t: datetime) -> datetime | None:
        calls[0] += 1
        return original(self, t)

    monkeypatch.setattr(Schedule, "next_after", counting)
    schedule = Schedule(cron="* * * * 1 *", tz="Europe/Berlin")
    last_of_january = datetime(2026, 1, 31, 22, 59, 59, tzinfo=UTC)  # 23:59:59 CET
    assert schedule.prev_at_or_before(datetime(2026, 12, 15, tzinfo=UTC)) == last_of_january
    noon = datetime(2026, 1, 10, 12, tzinfo=UTC)
    assert schedule.prev_at_or_before(noon + timedelta(microseconds=500)) == noon
    assert calls[0] <= 4


# --- weight ----------------------------------------------------------------------------------------
def test_the_schedule_module_pulls_in_no_other_scheduling_library() -> None:
    """The daemon imports this module: it must not drag APScheduler, tzlocal or dateutil along."""
    code = ("import sys, scheduler.schedule\n"
            "print(sorted(m for m in ('apscheduler', 'tzlocal', 'dateutil', 'croniter', 'pytz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
