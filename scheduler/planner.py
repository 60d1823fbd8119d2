"""The scheduling step: given the time, which runs are due and when to look again.

:meth:`Planner.due` is a pure step over the planner's cursors (the last slot decided per job), so
tests drive it with any clock; the daemon loop around it only sleeps and dispatches.

Invariants: a slot is decided at most once per job (cursors only move forward and are persisted
as the job's last fired slot); a slot that is merely late (within ``ON_TIME`` plus the job's
jitter) always fires; older missed slots follow the job's ``catchup`` policy, bounded by
``max_catchup``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.config import Config
from scheduler.runner import RunRequest
from scheduler.schedule import Schedule
from scheduler.state import StateStore

ON_TIME = timedelta(seconds=60)


class Planner:
    """Per-job cursors and next slots for one config."""

    def __init__(self, config: Config, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.cursor: dict[str, datetime | None] = {}
        self.next_slot: dict[str, datetime | None] = {}
        self.missed: dict[str, int] = {}  # slots decided but not fired (catch-up policy), per job

    def _periodic(self) -> list[tuple[str, Schedule]]:
        return [(name, self.config.schedules[name]) for name, spec in self.config.jobs.items()
                if spec.enabled and self.config.schedules[name].is_periodic]

    def start(self, now: datetime, carry: dict[str, datetime | None] | None = None) -> None:
        """Load cursors from the store (or ``carry`` them over from a previous config)."""
        self.cursor.clear()
        self.next_slot.clear()
        for name, schedule in self._periodic():
            if carry is not None and name in carry:
                last = carry[name]
            else:
                last = self.store.last_fired(name)
            self.cursor[name] = last
            self.next_slot[name] = schedule.next_after(last) if last is not None else schedule.first_at_or_after(
                now - ON_TIME)

    def fire_at(self, name: str, slot: datetime) -> datetime:
        return slot + self.config.schedules[name].jitter_for(name, slot)

    def due(self, now: datetime) -> list[RunRequest]:
        """Runs due at ``now``, oldest slot first; advances and persists the cursors they decide."""
        requests: list[RunRequest] = []
        for name, schedule in self._periodic():
            slot = self.next_slot.get(name)
            if slot is None or self.fire_at(name, slot) > now:
                continue
            spec = self.config.jobs[name]
            on_time = ON_TIME + schedule.jitter
            cursor = self.cursor.get(name)
            slots = schedule.due_slots(cursor if cursor is not None else slot - timedelta(microseconds=1),
                                       now, spec.catchup, spec.max_catchup, on_time)
            # With jitter the newest slot may not be due yet; it stays pending.
            slots = [s for s in slots if self.fire_at(name, s) <= now]
            for s in slots:
                trigger = "schedule" if now - s <= on_time else "catchup"
                requests.append(RunRequest(job=name, slot=s, trigger=trigger))
            decided = slots[-1] if slots else schedule.prev_at_or_before(now - on_time)
            if cursor is not None and decided is not None:
                dropped = _count_slots(schedule, cursor, decided) - len(slots)
                if dropped > 0:
                    self.missed[name] = self.missed.get(name, 0) + dropped
            if decided is not None and (cursor is None or decided > cursor):
                self.cursor[name] = decided
                self.store.set_last_fired(name, decided)
            self.next_slot[name] = schedule.next_after(self.cursor[name] or now)
        requests.sort(key=lambda r: r.slot)
        return requests

    def next_wakeup(self, now: datetime, cap: timedelta) -> datetime:
        """When the loop should look again: the earliest pending fire time, at most ``cap`` away."""
        best = now + cap
        for name, slot in self.next_slot.items():
            if slot is not None:
                best = min(best, self.fire_at(name, slot))
        return best


def _count_slots(schedule: Schedule, after: datetime, upto: datetime, cap: int = 10_000) -> int:
    """How many slots lie in ``(after, upto]``, counting at most ``cap`` (a bound on the work)."""
    count = 0
    for slot in schedule.iter_after(after):
        if slot > upto or count >= cap:
            break
        count += 1
    return count


def next_fire_times(config: Config, name: str, now: datetime, count: int = 3) -> list[datetime]:
    """The next ``count`` slots of a job after ``now`` (empty for jobs without a schedule)."""
    schedule = config.schedules[name]
    if not schedule.is_periodic:
        return []
    out: list[datetime] = []
    for slot in schedule.iter_after(now):
        out.append(slot)
        if len(out) >= count:
            break
    return out
