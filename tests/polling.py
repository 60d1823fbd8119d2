"""Polling with a deadline: how tests wait for something another process or thread does.

Never a fixed sleep: :func:`wait_for` returns as soon as the condition holds, and fails with what
it waited for (and the last value seen) once the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "", interval: float = 0.05, *,
             retry_errors: bool = False) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy, and return
    that; fail after ``timeout`` seconds.  With ``retry_errors`` an exception from ``predicate``
    (a server not listening yet) counts as "not yet" and is reported if the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except Exception as exc:
            if not retry_errors:
                raise
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last seen: {last!r}")
        time.sleep(interval)
