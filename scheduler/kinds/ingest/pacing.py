"""When the ingest fetcher may send its next request (the rate limit, urllib3's ``Retry`` state) and
when it must stop reading (the deadline's watchdog).

Invariants:
- :class:`RateLimiter`: no two request starts are closer than ``1 / per_second`` seconds, across
  threads; a wait that would end past the deadline fails at once with :class:`DeadlineExceeded`.
- :class:`PacedRetry` waits what urllib3's ``Retry`` would (a server's ``Retry-After`` up to
  ``retry_after_max``, else exponential backoff with jitter drawn once, so the wait logged is the
  wait slept), but never past the deadline, then takes its turn with the rate limiter; each
  retry is reported (``on_retry``) before its wait.
- :class:`Watchdog`: once the deadline passes, the body being read (if any) is cut off at once, so
  a read blocked on a server that trickles bytes returns; :attr:`Watchdog.fired` then says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from urllib3 import BaseHTTPResponse
from urllib3.util.retry import Retry

from scheduler.errors import JobFailed


class FetchError(JobFailed):
    """The source could not deliver a page; the message is redacted and safe to record."""


class DeadlineExceeded(FetchError):
    """The overall fetch deadline passed."""


class RateLimiter:
    """Spaces request starts at least ``1 / per_second`` apart (thread safe)."""

    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, deadline: float) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            if start > deadline:
                raise DeadlineExceeded("deadline reached while waiting for the rate limit")
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


OnRetry = Callable[[str | BaseException, int, int, float], None]  # (reason, next attempt, attempts at most, wait)


class PacedRetry(Retry):
    """urllib3 ``Retry`` that also respects the run deadline and the rate limit between attempts,
    and reports each retry (``on_retry``) before waiting for it."""

    deadline: float = float("inf")
    limiter: RateLimiter | None = None
    on_retry: OnRetry | None = None
    attempts: int = 1  # the most attempts one request may make (``total`` + 1)

    def new(self, **kw: Any) -> PacedRetry:
        retry = super().new(**kw)
        retry.deadline, retry.limiter, retry.on_retry, retry.attempts = (
            self.deadline, self.limiter, self.on_retry, self.attempts)
        return retry

    def sleep(self, response: Any = None) -> None:
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response) or None
        if wait is None:
            wait = self.get_backoff_time()  # jitter drawn once: the wait logged is the wait slept
        if time.monotonic() + wait > self.deadline:
            raise DeadlineExceeded(f"deadline reached: the next retry would wait {wait:.1f}s")
        if self.on_retry is not None and self.history:
            last = self.history[-1]
            reason: str | BaseException = f"HTTP {last.status}" if last.status else last.error or "retry"
            self.on_retry(reason, len(self.history) + 1, self.attempts, wait)
        if wait > 0:
            time.sleep(wait)
        if self.limiter is not None:
            self.limiter.acquire(self.deadline)


class Watchdog:
    """Cuts off the body being read when ``deadline`` (a ``time.monotonic()`` reading) passes.

    One timer thread (a daemon) per watchdog, started by the first :meth:`watch` (so a fetcher
    made before a fork starts its timer in the process that reads: threads do not cross a fork),
    until :meth:`cancel` ends it.  The reader registers the response (:meth:`watch`), checks
    :attr:`fired` and the deadline, reads in one blocking call, unregisters (``watch(None)``) and
    checks :attr:`fired` again: a timer that fires before the registration is caught by the
    reader's first check, one that fires after it shuts the socket down
    (``HTTPResponse.shutdown``), which ends the read with an error or a short body.
    """

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self._deadline = deadline
        self._lock = threading.Lock()
        self._watched: BaseHTTPResponse | None = None
        self._timer: threading.Timer | None = None
        self._cancelled = False

    def watch(self, response: BaseHTTPResponse | None) -> None:
        with self._lock:
            self._watched = response
            if self._timer is None and not self._cancelled:
                self._timer = threading.Timer(max(0.0, self._deadline - time.monotonic()), self._fire)
                self._timer.name, self._timer.daemon = "ingest-deadline", True
                self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._watched is not None:
                try:
                    self._watched.shutdown()
                except (OSError, RuntimeError, ValueError):
                    pass  # already released or closed: no read left to end

    def cancel(self) -> None:
        """Stop the timer (none starts after this); its thread has ended when this returns."""
        with self._lock:
            self._cancelled = True
            timer = self._timer
        if timer is None:
            return
        timer.cancel()
        if timer is not threading.current_thread():
            timer.join(5.0)
