"""Catch-up after downtime: :meth:`Schedule.due_slots` directly, then :class:`Planner` with a real
SQLite :class:`StateStore` and the clock pinned by freezegun.

No test measures time: a year of downtime is shown to be cheap by counting slot evaluations.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from scheduler import clock
from scheduler.config import Config, load_config
from scheduler.planner import ON_TIME, Planner
from scheduler.schedule import Schedule
from scheduler.state import StateStore

UTC = UTC
MINUTE = timedelta(minutes=1)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``Schedule.next_after`` calls, the unit of work behind every slot query."""
    calls = [0]
    original = Schedule.next_after

    def counting(self: Schedule, t: datetime) -> datetime | None:
        calls[0] += 1
        return original(self, t)

    monkeypatch.setattr(Schedule, "next_after", counting)
    return calls


# --- Schedule.due_slots ---------------------------------------------------------------------------
HOURLY = Schedule(cron="0 * * * *")


@pytest.mark.parametrize(("policy", "limit", "expected_hours"), [
    ("none", 10, [7]),  # the 07:00 slot is merely late: it fires under every policy
    ("latest", 10, [7]),
    ("all", 10, [3, 4, 5, 6, 7]),
    ("all", 3, [5, 6, 7]),
    ("all", 1, [7]),
])
def test_downtime_of_hours_ending_just_after_a_slot(policy: str, limit: int, expected_hours: list[int]) -> None:
    due = HOURLY.due_slots(at(2026, 5, 4, 2), at(2026, 5, 4, 7, 0, 10), policy, limit, ON_TIME)  # type: ignore[arg-type]
    assert due == [at(2026, 5, 4, h) for h in expected_hours]


@pytest.mark.parametrize(("policy", "limit", "expected_hours"), [
    ("none", 10, []),
    ("latest", 10, [7]),
    ("all", 10, [3, 4, 5, 6, 7]),
    ("all", 2, [6, 7]),
])
def test_downtime_of_hours_ending_between_slots(policy: str, limit: int, expected_hours: list[int]) -> None:
    due = HOURLY.due_slots(at(2026, 5, 4, 2), at(2026, 5, 4, 7, 30), policy, limit, ON_TIME)  # type: ignore[arg-type]
    assert due == [at(2026, 5, 4, h) for h in expected_hours]


@pytest.mark.parametrize("policy", ["none", "latest", "all"])
@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(seconds=5), timedelta(seconds=59),
                                  ON_TIME])
def test_a_slot_a_few_seconds_late_always_fires(policy: str, late: timedelta) -> None:
    slot = at(2026, 5, 4, 7)
    for last in (slot - timedelta(hours=1), slot - timedelta(days=400), None):
        due = HOURLY.due_slots(last, slot + late, policy, 10, ON_TIME)  # type: ignore[arg-type]
        assert due[-1:] == [slot], (policy, late, last)
        assert due == [slot] or (policy == "all" and last is not None)


def test_nothing_is_due_twice_or_before_the_last_slot() -> None:
    now = at(2026, 5, 4, 7, 0, 10)
    assert HOURLY.due_slots(at(2026, 5, 4, 7), now, "all", 10, ON_TIME) == []
    assert HOURLY.due_slots(at(2026, 5, 4, 8), now, "all", 10, ON_TIME) == []  # a cursor ahead of the clock
    assert HOURLY.due_slots(None, at(2026, 5, 4, 7, 30), "all", 10, ON_TIME) == []  # first start: no history


@pytest.mark.parametrize(("policy", "count"), [("none", 0), ("latest", 1), ("all", 10)])
def test_a_year_of_downtime_is_bounded_work(policy: str, count: int, counted: list[int]) -> None:
    now = at(2027, 3, 1, 10, 20)
    for schedule in (HOURLY, Schedule(cron="*/15 * * * *", tz="Europe/Berlin"),
                     Schedule(cron="30 2 * * *", tz="Europe/Berlin")):
        counted[0] = 0
        due = schedule.due_slots(at(2026, 3, 1, 10), now, policy, 10, ON_TIME)  # type: ignore[arg-type]
        assert len(due) == count
        assert due == sorted(set(due)) and all(s <= now for s in due)
        if due:
            assert due[-1] == schedule.prev_at_or_before(now)
        assert counted[0] <= 10 * (count + 2), "work must scale with the catch-up limit, not the downtime"


def test_catching_up_every_missed_interval_slot_needs_no_trigger() -> None:
    schedule = Schedule(every=timedelta(minutes=1))
    due = schedule.due_slots(at(2026, 1, 1), at(2027, 1, 1, 0, 0, 30), "all", 10_000, ON_TIME)
    assert len(due) == 10_000 and due[-1] == at(2027, 1, 1) and due[0] == at(2027, 1, 1) - 9_999 * MINUTE


# --- Planner with a real store --------------------------------------------------------------------
CONFIG = """\
    defaults:
      kind: command
      shell: "true"
    jobs:
      hourly_none:
        schedule: "0 * * * *"
        catchup: none
      hourly_latest:
        schedule: "0 * * * *"
        catchup: latest
      hourly_all:
        schedule: "0 * * * *"
        catchup: all
        max_catchup: 3
      daily_berlin:
        schedule: "30 2 * * *"
        timezone: Europe/Berlin
        catchup: all
        max_catchup: 5
      on_demand:
        after: [hourly_none]
      disabled:
        schedule: "* * * * *"
        enabled: false
    """


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "jobs.yaml"
    path.write_text(textwrap.dedent(CONFIG), encoding="utf-8")
    return load_config(path, env={})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def frozen() -> Iterator[object]:
    with freeze_time("2026-03-01 10:00:20", tz_offset=0) as f:
        yield f


def run_planner(config: Config, db: Path, missed: dict[str, int] | None = None) -> list[tuple[str, datetime, str]]:
    """One daemon life: open the store, start, take one step at the pinned time, close."""
    store = StateStore.open(db)
    try:
        planner = Planner(config, store)
        now = clock.now()
        planner.start(now)
        requests = [(r.job, r.slot, r.trigger) for r in planner.due(now)]
        planner.persist()  # as the daemon does after dispatching
        if missed is not None:
            missed.update(planner.missed)
        return requests
    finally:
        store.close()


def by_job(requests: list[tuple[str, datetime, str]]) -> dict[str, list[tuple[datetime, str]]]:
    out: dict[str, list[tuple[datetime, str]]] = {}
    for job, slot, trigger in requests:
        out.setdefault(job, []).append((slot, trigger))
    return out


def test_first_start_fires_the_slot_just_passed_and_records_it(config: Config, db: Path, frozen: object) -> None:
    requests = run_planner(config, db)
    assert by_job(requests) == {name: [(at(2026, 3, 1, 10), "schedule")]
                                for name in ("hourly_none", "hourly_latest", "hourly_all")}
    store = StateStore.open(db)
    try:
        assert store.last_fired("hourly_all") == at(2026, 3, 1, 10)
        assert store.last_fired("daily_berlin") is None  # nothing decided yet
    finally:
        store.close()
    assert run_planner(config, db) == []  # a restart in the same minute does not fire it again


def test_downtime_of_hours_follows_each_policy(config: Config, db: Path, frozen: object) -> None:
    run_planner(config, db)
    frozen.move_to("2026-03-01 15:20:00")  # type: ignore[attr-defined]
    missed: dict[str, int] = {}
    assert by_job(run_planner(config, db, missed)) == {
        "hourly_latest": [(at(2026, 3, 1, 15), "catchup")],
        "hourly_all": [(at(2026, 3, 1, h), "catchup") for h in (13, 14, 15)],
    }
    assert missed == {"hourly_none": 5, "hourly_latest": 4, "hourly_all": 2}  # 11:00-15:00 decided, not run
    assert run_planner(config, db) == []  # decided once, also for the job that skipped its slots
    frozen.move_to("2026-03-01 16:00:03")  # type: ignore[attr-defined]
    assert by_job(run_planner(config, db)) == {name: [(at(2026, 3, 1, 16), "schedule")]
                                               for name in ("hourly_none", "hourly_latest", "hourly_all")}


def test_a_year_of_downtime_yields_bounded_runs(config: Config, db: Path, frozen: object,
                                                counted: list[int]) -> None:
    run_planner(config, db)
    store = StateStore.open(db)
    store.set_last_fired("daily_berlin", at(2026, 3, 1, 1, 30))
    store.close()
    frozen.move_to("2027-03-01 10:20:00")  # type: ignore[attr-defined]
    counted[0] = 0
    requests = run_planner(config, db)
    assert by_job(requests) == {
        "hourly_latest": [(at(2027, 3, 1, 10), "catchup")],
        "hourly_all": [(at(2027, 3, 1, h), "catchup") for h in (8, 9, 10)],
        "daily_berlin": [(at(2027, 2, d, 1, 30), "catchup") for d in (25, 26, 27, 28)]
                        + [(at(2027, 3, 1, 1, 30), "catchup")],
    }
    assert [slot for _, slot, _ in requests] == sorted(slot for _, slot, _ in requests)
    # Work must not grow with the length of the downtime: a few slot queries per job and catch-up run.
    assert counted[0] < 1000


def test_a_jittered_slot_waits_for_its_delay_then_fires_on_time(tmp_path: Path, db: Path, frozen: object) -> None:
    path = tmp_path / "jitter.yaml"
    path.write_text('jobs:\n  j:\n    kind: command\n    shell: "true"\n    schedule: "0 * * * *"\n'
                    '    jitter: 10m\n', encoding="utf-8")
    config = load_config(path, env={})
    schedule = config.schedules["j"]
    slot = at(2026, 3, 1, 11)
    delay = schedule.jitter_for("j", slot)
    assert timedelta(0) < delay < timedelta(minutes=10)
    store = StateStore.open(db)
    try:
        planner = Planner(config, store)
        frozen.move_to("2026-03-01 10:59:50")  # type: ignore[attr-defined]
        planner.start(clock.now())
        assert planner.next_wakeup(clock.now(), timedelta(hours=1)) == slot + delay
        frozen.move_to(slot + delay - timedelta(seconds=1))  # type: ignore[attr-defined]
        assert planner.due(clock.now()) == []
        frozen.move_to(slot + delay)  # type: ignore[attr-defined]
        assert [(r.slot, r.trigger) for r in planner.due(clock.now())] == [(slot, "schedule")]
        assert planner.due(clock.now()) == []
    finally:
        store.close()


def test_a_running_daemon_fires_each_slot_once_through_a_dst_night(config: Config, db: Path, frozen: object) -> None:
    """Step the planner every 5 minutes through Berlin's 2026 fall-back night."""
    store = StateStore.open(db)
    try:
        planner = Planner(config, store)
        frozen.move_to("2026-10-24 22:00:00")  # type: ignore[attr-defined]
        planner.start(clock.now())
        fired: list[tuple[str, datetime]] = []
        now = clock.now()
        while now < at(2026, 10, 26, 3):
            fired += [(r.job, r.slot) for r in planner.due(now) if r.trigger == "schedule"]
            now += timedelta(minutes=5)
            frozen.move_to(now)  # type: ignore[attr-defined]
        daily = [slot for job, slot in fired if job == "daily_berlin"]
        assert daily == [at(2026, 10, 25, 0, 30), at(2026, 10, 26, 1, 30)]
        hourly = [slot for job, slot in fired if job == "hourly_none"]
        assert hourly == [at(2026, 10, 24, 22) + timedelta(hours=h) for h in range(29)]
        assert {job for job, _ in fired} == {"hourly_none", "hourly_latest", "hourly_all", "daily_berlin"}
    finally:
        store.close()
