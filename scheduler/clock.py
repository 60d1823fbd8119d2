"""The single time seam.

Everything that asks "what time is it" calls :func:`now` (or receives a ``Clock``), so tests pin
time with freezegun or a fake clock instead of sleeping.  Times are always timezone-aware UTC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def now() -> datetime:
    """Current time as an aware UTC datetime."""
    return datetime.now(UTC)


def monotonic() -> float:
    """Monotonic seconds, for durations and timeouts (never for slot times)."""
    return time.monotonic()
