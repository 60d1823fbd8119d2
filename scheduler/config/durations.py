"""Durations as users write them (``45s``, ``10m``, ``1h30m``, ``90``), without pydantic.

The daemon process uses these too, so this module imports only the standard library.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``90``, ``"45s"``, ``"10m"``, ``"1h30m"``, ``"2d"``, ``"250ms"`` into a timedelta.

    Bare numbers are seconds.  Negative durations are rejected.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 10m, 1h30m")
    elif isinstance(value, (int, float)):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text.startswith("-") and parse_duration(text[1:]):
            raise ValueError("must not be negative")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            result = timedelta(seconds=float(text))
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"invalid duration {value!r}: use a number with a unit, like 30s, 10m, 1h30m")
            result = timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))
    else:
        raise ValueError("must be a duration like 30s, 10m, 1h30m")
    if result < timedelta(0):
        raise ValueError("must not be negative")
    return result


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
