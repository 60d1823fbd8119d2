"""How long to wait before trying again, and waiting that a stop can cut short.

One backoff rule for the whole scheduler (run attempts, alert deliveries, ingest's connect
budget): the ``n``-th retry waits ``initial * 2 ** (n - 1)`` seconds, at most ``cap``, then
jitter spreads the waits of many clients apart.  A server's ``Retry-After`` (seconds or an HTTP
date) replaces the backoff, up to its own cap.  Waits go through :func:`wait`, which returns as
soon as a stop is asked for: nothing here calls an uninterruptible ``time.sleep``.

urllib3's ``Retry`` keeps pacing ingest's HTTP status retries (its pinned behaviour and log
lines build on it); its formula is the same one.

Invariants: every wait is finite and >= 0; :meth:`Backoff.base` never exceeds ``cap``; jitter
never makes a wait exceed ``base + jitter`` nor fall below ``base * (1 - spread)``.
Only the standard library is imported: the daemon loads this at start.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial`` doubling per retry, capped at ``cap``, then jittered.

    ``spread`` draws the wait uniformly from ``[base * (1 - spread), base]`` (``0.5``: between
    half and all of it); ``jitter`` adds up to that many seconds on top.  Either may be 0.
    """

    initial: float
    cap: float
    spread: float = 0.0
    jitter: float = 0.0

    def base(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first) without jitter."""
        if retry < 1 or self.initial <= 0:
            return 0.0
        # 2 ** 1100 overflows a float: past the cap the exponent no longer matters
        exponent = min(retry - 1, 1000)
        return float(min(self.cap, self.initial * 2.0 ** exponent))

    def jittered(self, base: float, rng: random.Random | None = None) -> float:
        """``base`` with this backoff's spread and jitter applied."""
        draw = (rng or random).uniform
        wait = draw(base * (1 - self.spread), base) if self.spread else base
        if self.jitter:
            wait += draw(0, self.jitter)
        return max(0.0, wait)

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry``: the server's ``retry_after`` when it gave one (already
        capped, see :func:`retry_after`), else the jittered backoff."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return self.jittered(self.base(retry), rng)


def retry_after(value: str | None, cap: float, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for, at most ``cap``; ``None`` when absent or unreadable.

    The value is either a number of seconds or an HTTP date (``Wed, 21 Oct 2026 07:28:00 GMT``);
    a date in the past means "now" (0).  ``now`` is the clock seam for the date form.
    """
    if value is None:
        return None
    match = _SECONDS.match(value)
    if match:
        seconds = float(match.group(1))
    else:
        from email.utils import parsedate_to_datetime  # only when a server sends a date

        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110: HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        current = now() if now is not None else datetime.now(UTC)
        seconds = (when - current).total_seconds()
    return min(max(0.0, seconds), cap)


def wait(seconds: float, wake: threading.Event, stopped: Callable[[], bool] | None = None,
         monotonic: Callable[[], float] = time.monotonic) -> bool:
    """Wait up to ``seconds``; return True as soon as a stop is asked for, False when the time is up.

    A stop is ``wake`` being set, or, when ``stopped`` is given, ``stopped()`` turning true:
    ``wake`` is then only the doorbell (it may ring for other reasons, and is cleared and waited on
    again while ``stopped()`` stays false).  ``monotonic`` is the clock seam.
    """
    deadline = monotonic() + seconds
    while True:
        if stopped is None and wake.is_set():
            return True
        if stopped is not None and stopped():
            return True
        remaining = deadline - monotonic()
        if remaining <= 0:
            return False
        if stopped is not None:
            wake.clear()
            if stopped():  # asked between the check above and the clear: do not miss it
                return True
        wake.wait(remaining)
