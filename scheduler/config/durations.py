"""Durations as users write them (``45s``, ``10m``, ``1h30m``, ``90``), without pydantic.

The grammar is written once, as :data:`DURATION_PATTERN`: the parser matches it and the JSON
Schema publishes it, so an editor accepts exactly the strings the loader accepts.  It uses only
ASCII classes, so Python's ``re`` and an editor's ECMAScript engine read it alike.

The daemon process uses these too, so this module imports only the standard library.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_UNIT = r"(?:ms|s|m|h|d|w)"
# A bare number of seconds, or number-unit parts in any order ("1h30m", "90s", "1h 30m").
DURATION_PATTERN = rf"^ *(?:{_NUMBER}|(?:{_NUMBER} *{_UNIT} *)+) *$"
# The longest duration (Python's timedelta limit, in whole days): a bound, not a crash.
MAX_SECONDS = timedelta.max.days * 86400

_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(rf"({_NUMBER}) *(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SHAPE = "must be a duration like 30s, 10m, 1h30m"


def _seconds(seconds: float) -> timedelta:
    if math.isnan(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"must be a duration of at most {MAX_SECONDS} seconds")
    if seconds < 0:
        raise ValueError("must not be negative")
    return timedelta(seconds=seconds)


def parse_duration(value: Any) -> timedelta:
    """Parse ``90``, ``"45s"``, ``"10m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` into a timedelta.

    Bare numbers are seconds.  Negative durations are rejected; every failure is a ValueError.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value
    if isinstance(value, bool):
        raise ValueError(_SHAPE)
    if isinstance(value, (int, float)):
        return _seconds(float(value))
    if not isinstance(value, str):
        raise ValueError(_SHAPE)
    if not _DURATION.match(value):
        if value.lstrip(" ").startswith("-") and _DURATION.match(value.lstrip(" ")[1:]):
            raise ValueError("must not be negative")
        raise ValueError(f"invalid duration {value!r}: use a number with a unit, like 30s, 10m, 1h30m")
    text = value.strip(" ")
    if re.fullmatch(_NUMBER, text):
        return _seconds(float(text))
    return _seconds(sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)))


def format_duration(td: timedelta) -> str:
    """Inverse of :func:`parse_duration` for display and JSON schema examples."""
    seconds = td.total_seconds()
    if seconds == int(seconds):
        seconds = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    return f"{seconds}s"
