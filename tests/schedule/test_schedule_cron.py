"""Cron syntax and the non-DST behaviour of :class:`Schedule`: fields, aliases, weekdays, Vixie
day matching, epoch-anchored intervals, jitter and the logical-date round trip."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import islice

import pytest

from scheduler.schedule import EPOCH, Schedule

UTC = UTC
MONDAY = datetime(2026, 6, 1, tzinfo=UTC)  # 2026-06-01 is a Monday
TICK = timedelta(microseconds=1)


def first(schedule: Schedule, n: int, after: datetime = MONDAY - TICK) -> list[datetime]:
    return list(islice(schedule.iter_after(after), n))


def fire_days(expr: str, n: int, after: datetime = MONDAY - TICK) -> list[str]:
    """``DDDow`` of the first ``n`` slots, e.g. ``01Mon``."""
    return [s.strftime("%d%a") for s in first(Schedule(cron=expr), n, after)]


# --- fields and aliases ---------------------------------------------------------------------------
def test_five_fields_fire_on_the_minute() -> None:
    assert first(Schedule(cron="*/20 9-10 * * *"), 4) == [
        datetime(2026, 6, 1, 9, 0, tzinfo=UTC), datetime(2026, 6, 1, 9, 20, tzinfo=UTC),
        datetime(2026, 6, 1, 9, 40, tzinfo=UTC), datetime(2026, 6, 1, 10, 0, tzinfo=UTC)]


def test_six_fields_put_seconds_first() -> None:
    assert first(Schedule(cron="*/20 * * * * *"), 4, datetime(2026, 1, 1, tzinfo=UTC)) == [
        datetime(2026, 1, 1, 0, 0, 20, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 40, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, 20, tzinfo=UTC)]
    assert first(Schedule(cron="30 15 12 * * *"), 2) == [
        datetime(2026, 6, 1, 12, 15, 30, tzinfo=UTC), datetime(2026, 6, 2, 12, 15, 30, tzinfo=UTC)]


@pytest.mark.parametrize(("alias", "same_as"), [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@DAILY", "0 0 * * *"),
    (" @hourly ", "0 * * * *"),
])
def test_aliases_equal_their_expansion(alias: str, same_as: str) -> None:
    assert first(Schedule(cron=alias, tz="Europe/Berlin"), 5) == first(Schedule(cron=same_as, tz="Europe/Berlin"), 5)


def test_alias_values() -> None:
    assert first(Schedule(cron="@weekly"), 2) == [datetime(2026, 6, 7, tzinfo=UTC), datetime(2026, 6, 14, tzinfo=UTC)]
    assert first(Schedule(cron="@monthly"), 2) == [datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)]
    assert first(Schedule(cron="@daily", tz="America/New_York"), 1) == [datetime(2026, 6, 1, 4, tzinfo=UTC)]


@pytest.mark.parametrize("expr", ["@hourli", "@every 5m", "0 * * *", "0 0 0 * * * *", "61 * * * *", "0 24 * * *",
                                  "0 0 0 * *", "0 0 * 0 *", "0 0 * * 8", "0 0 * * fri-mon", "0 0 * * 5-1", "0 0 * * #",
                                  "0 0 * * 1/0", "a b c d e"])
def test_invalid_expressions_raise_value_error(expr: str) -> None:
    with pytest.raises(ValueError):
        Schedule(cron=expr)


def test_cron_and_every_together_is_an_error() -> None:
    with pytest.raises(ValueError):
        Schedule(cron="* * * * *", every=timedelta(minutes=1))
    with pytest.raises(ValueError):
        Schedule(every=timedelta(0))


# --- weekdays -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("dow", "expected"), [
    ("0", ["07Sun", "14Sun", "21Sun"]),
    ("7", ["07Sun", "14Sun", "21Sun"]),
    ("sun", ["07Sun", "14Sun", "21Sun"]),
    ("SUN", ["07Sun", "14Sun", "21Sun"]),
    ("1-5", ["01Mon", "02Tue", "03Wed", "04Thu", "05Fri", "08Mon"]),
    ("mon-fri", ["01Mon", "02Tue", "03Wed", "04Thu", "05Fri", "08Mon"]),
    ("Mon-Fri", ["01Mon", "02Tue", "03Wed", "04Thu", "05Fri", "08Mon"]),
    ("5-7", ["05Fri", "06Sat", "07Sun", "12Fri"]),  # 7 closes a range as Sunday
    ("0,6", ["06Sat", "07Sun", "13Sat", "14Sun"]),
    ("sat,sun", ["06Sat", "07Sun", "13Sat", "14Sun"]),
    ("1-5/2", ["01Mon", "03Wed", "05Fri", "08Mon"]),
    ("*/2", ["02Tue", "04Thu", "06Sat", "07Sun", "09Tue"]),  # 0,2,4,6
    ("0-7", ["01Mon", "02Tue", "03Wed", "04Thu", "05Fri", "06Sat", "07Sun", "08Mon"]),
    ("*", ["01Mon", "02Tue", "03Wed"]),
])
def test_weekday_numbering_is_crons(dow: str, expected: list[str]) -> None:
    assert fire_days(f"0 0 * * {dow}", len(expected)) == expected


# --- day of month OR day of week (Vixie cron) ------------------------------------------------------
def test_restricted_day_of_month_and_weekday_match_either() -> None:
    # June 2026: Fridays are 5, 12, 19, 26; the 13th is a Saturday; July 13th a Monday.
    assert fire_days("0 0 13 * 5", 8) == ["05Fri", "12Fri", "13Sat", "19Fri", "26Fri", "03Fri", "10Fri", "13Mon"]
    # The classic trap: "first Monday" written this way fires on days 1-7 *and* every Monday.
    assert fire_days("0 0 1-7 * mon", 10) == ["01Mon", "02Tue", "03Wed", "04Thu", "05Fri", "06Sat", "07Sun",
                                              "08Mon", "15Mon", "22Mon"]


def test_unrestricted_day_field_leaves_the_other_alone() -> None:
    assert fire_days("0 0 13 * *", 3) == ["13Sat", "13Mon", "13Thu"]
    assert fire_days("0 0 * * 5", 3) == ["05Fri", "12Fri", "19Fri"]
    assert fire_days("0 0 ? * mon", 3) == ["01Mon", "08Mon", "15Mon"]


def test_a_day_field_starting_with_star_makes_vixie_match_both() -> None:
    """Vixie cron (and cronie) treat a day field that *begins* with ``*`` (like ``*/2``) as
    unrestricted for the OR rule, so the two fields are ANDed: odd days of the month that are
    Mondays.  June 2026: Monday the 1st, 15th, 29th."""
    assert fire_days("0 0 */2 * 1", 3) == ["01Mon", "15Mon", "29Mon"]
    assert fire_days("0 0 1-31/2 * 1", 3) == ["01Mon", "03Wed", "05Fri"]  # a range is restricted: OR
    assert fire_days("0 0 13 * */2", 3) == ["13Sat", "13Thu", "13Sun"]  # weekday starts with *: AND


# --- intervals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("every", [timedelta(seconds=90), timedelta(minutes=7), timedelta(hours=5),
                                   timedelta(days=1), timedelta(days=10)])
def test_interval_slots_are_anchored_at_the_epoch(every: timedelta) -> None:
    schedule = Schedule(every=every, tz="Australia/Lord_Howe")  # the zone plays no part
    for t in (datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
              datetime(2030, 1, 1, 12, 34, 56, 789, tzinfo=UTC)):
        following, previous = schedule.next_after(t), schedule.prev_at_or_before(t)
        assert following is not None and previous is not None
        assert previous <= t < following == previous + every
        assert (following - EPOCH) % every == timedelta(0)
        assert schedule.next_after(following) == following + every
        assert schedule.prev_at_or_before(following) == following  # a slot is at-or-before itself
        assert schedule.next_after(following - TICK) == following


def test_interval_slots_do_not_depend_on_when_you_ask() -> None:
    schedule = Schedule(every=timedelta(minutes=45))
    a = first(schedule, 40, datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    b = first(schedule, 20, a[19] - timedelta(seconds=3))
    assert a[19:39] == b
    assert first(Schedule(every=timedelta(days=1), tz="America/New_York"), 1) == [datetime(2026, 6, 1, tzinfo=UTC)]


def test_a_schedule_without_cron_or_every_never_fires() -> None:
    schedule = Schedule()
    assert not schedule.is_periodic
    assert schedule.next_after(MONDAY) is None and schedule.prev_at_or_before(MONDAY) is None
    assert schedule.due_slots(None, MONDAY, "all", 10, timedelta(seconds=60)) == []
    assert schedule.slot_for_date(date(2026, 6, 1)) == datetime(2026, 6, 2, tzinfo=UTC)
    assert schedule.describe() == "-"


# --- jitter ---------------------------------------------------------------------------------------
def test_jitter_is_stable_and_within_range() -> None:
    jitter = timedelta(minutes=5)
    schedule = Schedule(cron="*/5 * * * *", jitter=jitter)
    again = Schedule(cron="*/5 * * * *", jitter=jitter)
    slots = first(schedule, 2000)
    delays = [schedule.jitter_for("report", s) for s in slots]
    assert delays == [again.jitter_for("report", s) for s in slots]  # stable across instances (and restarts)
    assert all(timedelta(0) <= d < jitter for d in delays)
    assert min(delays) < jitter / 20 and max(delays) > jitter * 19 / 20  # spread over the whole range
    assert delays != [schedule.jitter_for("other", s) for s in slots]  # jobs do not fire in lockstep
    assert len(set(delays)) > 1900


def test_no_jitter_means_no_delay() -> None:
    schedule = Schedule(cron="* * * * *")
    assert {schedule.jitter_for("job", s) for s in first(schedule, 50)} == {timedelta(0)}


# --- logical dates --------------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 * * * *", "*/15 * * * *", "0 0 * * *", "15 23 * * *", "@daily"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Australia/Lord_Howe"])
def test_logical_date_of_slot_for_date_is_that_date(expr: str, tz: str) -> None:
    schedule = Schedule(cron=expr, tz=tz)
    day = date(2026, 1, 1)
    while day < date(2027, 1, 1):
        slot = schedule.slot_for_date(day)
        assert schedule.logical_date(slot) == day, f"{expr} {tz} {day}"
        start, end = schedule.interval_of(slot)
        assert end == slot and schedule.next_after(start) == slot
        day += timedelta(days=13)


def test_interval_of_a_daily_slot_is_the_previous_day() -> None:
    schedule = Schedule(cron="0 6 * * *", tz="Europe/London")
    slot = schedule.slot_for_date(date(2026, 6, 10))
    assert slot == datetime(2026, 6, 11, 5, tzinfo=UTC)
    assert schedule.interval_of(slot) == (datetime(2026, 6, 10, 5, tzinfo=UTC), slot)


def test_weekly_logical_date_is_the_start_of_the_week_covered() -> None:
    schedule = Schedule(cron="0 0 * * mon")
    slot = schedule.slot_for_date(date(2026, 6, 1))
    assert slot == datetime(2026, 6, 8, tzinfo=UTC)
    assert schedule.logical_date(slot) == date(2026, 6, 1)


def test_interval_every_has_interval_of_one_step() -> None:
    schedule = Schedule(every=timedelta(hours=6))
    slot = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert schedule.interval_of(slot) == (datetime(2026, 6, 1, 6, tzinfo=UTC), slot)
    assert schedule.logical_date(schedule.slot_for_date(date(2026, 6, 1))) == date(2026, 6, 1)


# --- schedules that can never fire ----------------------------------------------------------------
@pytest.mark.parametrize("expr", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 *"])
def test_a_schedule_that_can_never_fire_is_rejected(expr: str) -> None:
    """No month has such a day: the job would silently never run (and every slot query would scan
    to the end of APScheduler's calendar), so it must fail at load time."""
    with pytest.raises(ValueError):
        Schedule(cron=expr)


def test_an_impossible_day_is_fine_when_the_weekday_can_match() -> None:
    assert fire_days("0 0 30 2 mon", 2, datetime(2027, 1, 1, tzinfo=UTC)) == ["01Mon", "08Mon"]
    assert fire_days("0 0 29 2 *", 2, datetime(2026, 1, 1, tzinfo=UTC)) == ["29Tue", "29Sun"]  # 2028, 2032
