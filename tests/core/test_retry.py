"""The one retry helper: backoff with cap and jitter, Retry-After in both forms, interruptible waits."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from scheduler.neterrors import ConnectBudget, Failure
from scheduler.retry import Backoff, retry_after, wait

NOW = datetime(2026, 11, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("backoff", "waits"), [
    (Backoff(1.0, 30.0), [1, 2, 4, 8, 16, 30, 30]),
    (Backoff(0.5, 4.0), [0.5, 1, 2, 4, 4, 4, 4]),
    (Backoff(10.0, 5.0), [5, 5, 5, 5, 5, 5, 5]),  # a cap below the first wait wins
    (Backoff(0.0, 30.0), [0, 0, 0, 0, 0, 0, 0]),
])
def test_backoff_doubles_up_to_the_cap(backoff: Backoff, waits: list[float]) -> None:
    assert [backoff.base(n) for n in range(1, 8)] == waits
    assert backoff.base(10_000) == backoff.base(7)  # no overflow however many retries
    assert backoff.base(0) == 0


@pytest.mark.parametrize("backoff", [Backoff(1.0, 30.0, spread=0.5), Backoff(1.0, 30.0, jitter=0.25),
                                     Backoff(1.0, 30.0, spread=0.5, jitter=0.25), Backoff(1.0, 30.0)])
def test_jitter_stays_within_its_bounds(backoff: Backoff) -> None:
    rng = random.Random(7)
    for retry in range(1, 9):
        base = backoff.base(retry)
        draws = [backoff.delay(retry, rng=rng) for _ in range(200)]
        assert all(base * (1 - backoff.spread) <= d <= base + backoff.jitter for d in draws)
        if backoff.spread or backoff.jitter:
            assert len(set(draws)) > 1  # jitter spreads retries apart
        else:
            assert set(draws) == {base}


def test_a_retry_after_replaces_the_backoff() -> None:
    assert Backoff(1.0, 30.0, spread=0.5).delay(3, retry_after=7.0) == 7.0
    assert Backoff(1.0, 30.0).delay(1, retry_after=0.0) == 0.0


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("5", 5.0),
    (" 7 ", 7.0),
    ("0", 0.0),
    ("120", 30.0),  # capped
    ("2.5", 2.5),
    (format_datetime(NOW + timedelta(seconds=12), usegmt=True), 12.0),
    (format_datetime(NOW + timedelta(hours=2), usegmt=True), 30.0),  # capped
    (format_datetime(NOW - timedelta(minutes=5), usegmt=True), 0.0),  # already past: now
    ("Thu, 05 Nov 2026 12:00:20 +0000", 20.0),
    ("soon", None),
    ("-5", None),
    ("", None),
])
def test_retry_after_in_seconds_or_as_an_http_date(header: str | None, expected: float | None) -> None:
    assert retry_after(header, cap=30.0, now=lambda: NOW) == expected


def test_a_stop_ends_a_long_wait_at_once() -> None:
    stop = threading.Event()
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(wait(3600, stop)))
    waiter.start()
    stop.set()
    waiter.join(30)
    assert not waiter.is_alive() and outcome == [True]


class Doorbell(threading.Event):
    """An event whose every wait returns at once, as if rung; the ``stop_at``-th ring is a stop."""

    def __init__(self, stopped: threading.Event, stop_at: int) -> None:
        super().__init__()
        self.stopped, self.stop_at, self.rings = stopped, stop_at, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.rings += 1
        if self.rings == self.stop_at:
            self.stopped.set()
        return True


def test_a_doorbell_without_a_stop_keeps_waiting() -> None:
    stopped = threading.Event()
    wake = Doorbell(stopped, stop_at=3)  # two rings for other reasons (a run's process exited)
    assert wait(3600, wake, stopped.is_set) is True
    assert wake.rings == 3


def test_a_wait_that_runs_out_is_not_a_stop() -> None:
    ticks = iter([0.0, 5.0])  # the clock seam: the time is up at the first look
    assert wait(1.0, threading.Event(), monotonic=lambda: next(ticks)) is False
    assert wait(0.0, threading.Event()) is False


def test_the_connect_budget_plans_with_the_same_backoff() -> None:
    budget = ConnectBudget(budget=10.0, backoff=1.0, backoff_max=4.0, jitter=0.0)
    assert budget.waits == [Backoff(1.0, 4.0).base(n) for n in range(1, 4)] == [1.0, 2.0, 4.0]
    refused = Failure("connect", "connection refused")
    assert budget.next_wait(refused) == 1.0
    assert budget.next_wait(refused) == 2.0
