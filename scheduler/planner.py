"""The scheduling step: given the time, which runs are due and when to look again.

:meth:`Planner.due` is a pure step over the planner's cursors (the last slot decided per job), so
tests drive it with any clock; the daemon loop around it only sleeps and dispatches.

Invariants: a slot is decided at most once per job (cursors only move forward and are persisted
as the job's last fired slot); a slot that is merely late (within ``ON_TIME`` plus the job's
jitter) always fires; older missed slots follow the job's ``catchup`` policy, bounded by
``max_catchup``.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

from scheduler.config.compiled import Config
from scheduler.runs import RunRequest
from scheduler.schedule import Schedule
from scheduler.stores.protocol import StateStore

ON_TIME = timedelta(seconds=60)


class Planner:
    """Per-job cursors and next slots for one config, with a heap of pending fire times.

    Each pass costs O(due jobs * log n), not O(n): the heap holds ``(fire_time, job, slot)`` for
    every periodic job; entries whose slot is no longer the job's pending one are stale and skipped.
    """

    def __init__(self, config: Config, store: StateStore) -> None:
        self.config = config
        self.store = store
        self.cursor: dict[str, datetime | None] = {}
        self.next_slot: dict[str, datetime | None] = {}
        self.missed: list[tuple[str, int]] = []  # (job, slots passed over by the catch-up policy)
        self._unsaved: dict[str, datetime] = {}  # cursors decided but not yet persisted
        self._heap: list[tuple[datetime, str, datetime]] = []
        self._periodic = {name: config.schedules[name] for name, spec in config.jobs.items()
                          if spec.enabled and config.schedules[name].is_periodic}

    def _pend(self, name: str, slot: datetime | None) -> None:
        self.next_slot[name] = slot
        if slot is not None:
            heapq.heappush(self._heap, (self.fire_at(name, slot), name, slot))

    def start(self, now: datetime, carry: dict[str, datetime | None] | None = None) -> None:
        """Load cursors from the store (or ``carry`` them over from a previous config)."""
        self.cursor.clear()
        self.next_slot.clear()
        self._heap.clear()
        for name, schedule in self._periodic.items():
            last = carry[name] if carry is not None and name in carry else self.store.last_fired(name)
            self.cursor[name] = last
            self._pend(name, schedule.next_after(last) if last is not None
                       else schedule.first_at_or_after(now - ON_TIME))

    def fire_at(self, name: str, slot: datetime) -> datetime:
        return slot + self.config.schedules[name].jitter_for(name, slot)

    def due(self, now: datetime) -> list[RunRequest]:
        """Runs due at ``now``, oldest slot first; advances the cursors they decide (see :meth:`persist`)."""
        requests: list[RunRequest] = []
        while self._heap and self._heap[0][0] <= now:
            _, name, slot = heapq.heappop(self._heap)
            if self.next_slot.get(name) != slot:
                continue  # stale entry
            requests.extend(self._decide(name, slot, now))
        requests.sort(key=lambda r: r.slot)
        return requests

    def _decide(self, name: str, slot: datetime, now: datetime) -> list[RunRequest]:
        schedule = self._periodic[name]
        spec = self.config.jobs[name]
        on_time = ON_TIME + schedule.jitter
        cursor = self.cursor.get(name)
        slots = schedule.due_slots(cursor if cursor is not None else slot - timedelta(microseconds=1),
                                   now, spec.catchup, spec.max_catchup, on_time)
        # With jitter the newest slot may not be due yet; it stays pending.
        slots = [s for s in slots if self.fire_at(name, s) <= now]
        decided = slots[-1] if slots else schedule.prev_at_or_before(now - on_time)
        if cursor is not None and decided is not None and decided > cursor:
            dropped = _count_slots(schedule, cursor, decided, cap=spec.max_catchup + 100) - len(slots)
            if dropped > 0:
                self.missed.append((name, dropped))
        if decided is not None and (cursor is None or decided > cursor):
            self.cursor[name] = decided
            self._unsaved[name] = decided
        self._pend(name, schedule.next_after(self.cursor[name] or now))
        return [RunRequest(job=name, slot=s, trigger="schedule" if now - s <= on_time else "catchup")
                for s in slots]

    def hold(self, name: str) -> None:
        """Stop planning ``name``'s slots (the job is paused): its pending slot is dropped and its
        cursor stays, so :meth:`release` treats the time in between like a downtime."""
        if name in self._periodic:
            self.next_slot[name] = None  # its heap entries are stale from now on

    def release(self, name: str, now: datetime) -> None:
        """Plan ``name`` again from its cursor: slots passed while held follow its ``catchup``."""
        schedule = self._periodic.get(name)
        if schedule is None or self.next_slot.get(name) is not None:
            return
        cursor = self.cursor.get(name)
        self._pend(name, schedule.next_after(cursor) if cursor is not None
                   else schedule.first_at_or_after(now - ON_TIME))

    def persist(self) -> None:
        """Store the cursors decided since the last call (the daemon calls this after dispatching,
        so a slot's child starts before the write; a crash in between at worst reruns that slot)."""
        if self._unsaved:
            self.store.set_last_fired_many(self._unsaved)
            self._unsaved = {}

    def next_wakeup(self, now: datetime, cap: timedelta) -> datetime:
        """When the loop should look again: the earliest pending fire time, at most ``cap`` away."""
        while self._heap and self.next_slot.get(self._heap[0][1]) != self._heap[0][2]:
            heapq.heappop(self._heap)
        best = now + cap
        return min(best, self._heap[0][0]) if self._heap else best


def _count_slots(schedule: Schedule, after: datetime, upto: datetime, cap: int) -> int:
    """How many slots lie in ``(after, upto]``; for cron schedules at most ``cap`` (a lower bound)."""
    if schedule.every is not None:
        return int((upto - after) // schedule.every)
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
