"""A job's schedule in words (``At 02:00, Monday through Friday``) beside its expression.

Cron expressions are described by cron-descriptor from the six-field form the scheduler itself
evaluates (:func:`scheduler.schedule.parse_cron`: seconds first, aliases expanded), so the words
and the fire times come from the same fields.  Intervals are spelled out from their duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from scheduler.config.durations import format_duration
from scheduler.schedule import Schedule, parse_cron

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


@dataclass(frozen=True)
class ScheduleText:
    words: str  # "At 02:00", "Every 10 seconds", "After extract", "Only when triggered"
    expression: str  # the cron as written, "every 10s", or "-"


def interval_words(every: timedelta) -> str:
    """``Every 10 seconds``, ``Every hour``, ``Every 1 hour 30 minutes``."""
    seconds = int(every.total_seconds())
    if seconds <= 0 or every.microseconds:
        return f"Every {format_duration(every)}"
    parts: list[tuple[int, str]] = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append((count, name))
    if len(parts) == 1 and parts[0][0] == 1:
        return f"Every {parts[0][1]}"
    return "Every " + " ".join(f"{count} {name}{'s' if count != 1 else ''}" for count, name in parts)


def cron_words(expression: str) -> str:
    """cron-descriptor's description of a cron expression the scheduler accepts (24-hour clock;
    with both day fields restricted it says "or", as the scheduler fires on either day)."""
    from cron_descriptor import ExpressionDescriptor, Options

    fields = parse_cron(expression)
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return str(ExpressionDescriptor(fields, options).get_description())
    except Exception:  # noqa: BLE001 - words are a courtesy; the expression is always shown beside them
        return expression


def describe(schedule: Schedule, after: tuple[str, ...]) -> ScheduleText:
    """The words and the expression for a job's schedule and ``after:`` upstream jobs."""
    chained = f"after {', '.join(after)}" if after else ""
    if schedule.cron is not None:
        words = cron_words(schedule.cron)
        return ScheduleText(words + (f"; also {chained}" if chained else ""), schedule.cron)
    if schedule.every is not None:
        words = interval_words(schedule.every)
        return ScheduleText(words + (f"; also {chained}" if chained else ""), schedule.describe())
    if chained:
        return ScheduleText(chained[0].upper() + chained[1:], "-")
    return ScheduleText("Only when triggered", "-")
