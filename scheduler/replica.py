"""What one scheduler replica needs beside the loop when several share a PostgreSQL store.

* :class:`LeaseKeeper`, a thread on a connection of its own (``store.sibling()``): it renews this
  replica's leases every third of ``state.lease_ttl``, probes the database between renewals,
  expires the leases of replicas that died (each expired run is returned to exactly one
  replica, which resumes it), and tells the replica when its own runs were taken over or when it
  could not renew them for a whole TTL (the replica must then stop them: another replica may
  already run their slots).  It never waits behind the loop's store calls.
* :class:`Outbox`, the run records a replica could not write while the database was unreachable
  (finished runs, retries, skipped slots), kept in memory and written in order once it answers.

Invariants:

* leases of other replicas are expired only after this replica has reached the database without
  a break for a whole TTL: every live replica renews within a third of it after an outage, so a
  lease still expired then belongs to a replica that is gone, not to one that was cut off too;
* a record in the outbox is written exactly once, in the order the runs produced them, and a
  record is never written past one queued before it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.errors import StateError
from scheduler.logs import get_logger
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.state import RunRecord
    from scheduler.stores.protocol import StateStore

LEASE_LOST = "lease lost"  # how the cancel reason of a run this replica had to give up begins
RENEWALS_PER_TTL = 3
MAX_PROBE_INTERVAL = 1.0  # seconds between probes of the database (and sweeps of expired leases)


def shared(config: Any) -> bool:
    """Whether ``config``'s state store is shared by replicas (claims, leases, outbox in use)."""
    return config.state is not None and config.state.backend == "postgres"


class LeaseKeeper:
    """Renews this replica's leases and watches the database; see the module docstring.

    Callbacks run on the keeper's thread and must be thread-safe and quick:
    ``on_lost(run_ids, reason)`` for runs this replica must stop, ``on_expired(records)`` for
    runs of dead replicas it abandoned (to resume), ``on_up()`` when the database answers again.
    ``held()`` returns the ids of the runs this replica is running now.
    """

    def __init__(self, store: StateStore, held: Callable[[], set[int]] | None = None,
                 on_lost: Callable[[set[int], str], None] | None = None,
                 on_expired: Callable[[list[RunRecord]], None] | None = None,
                 on_up: Callable[[], None] | None = None, expire: bool = True) -> None:
        self.store = store.sibling()
        self.ttl = store.lease_ttl
        self.owner = store.owner
        self.held = held or (lambda: set())
        self.on_lost, self.on_expired, self.on_up = on_lost, on_expired, on_up
        self.expire = expire
        self.renew_every = self.ttl.total_seconds() / RENEWALS_PER_TTL
        self.probe_every = min(MAX_PROBE_INTERVAL, self.renew_every)
        self.down_reason: str | None = None
        self.down_since: datetime | None = None
        self._up_since: float | None = clock.monotonic()  # a start counts as an outage's end
        self._last_renewed = clock.monotonic()
        self._next_renewal = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
        self.log = get_logger()

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl.total_seconds())
        self.store.close()

    def mark_down(self, reason: str) -> None:
        """The loop's own call failed: count the database as unreachable until a probe answers."""
        if self.down_reason is None:
            self.down_reason, self.down_since, self._up_since = reason, clock.now(), None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.probe_every)

    def tick(self) -> None:
        """One probe: renew when due; expire dead replicas' leases when allowed; else ping."""
        now = clock.monotonic()
        try:
            probed = False
            if now >= self._next_renewal:
                before = self.held()
                kept = set(self.store.renew_leases(self.owner, self.ttl))
                self._last_renewed, self._next_renewal, probed = now, now + self.renew_every, True
                self._reached()
                lost = {run_id for run_id in before - kept if self._taken(run_id)}
                if lost and self.on_lost is not None:
                    self.on_lost(lost, f"{LEASE_LOST}: another scheduler replica took the run over")
            if self.expire and self._up_since is not None and now - self._up_since >= self.ttl.total_seconds():
                expired = self.store.expire_leases()
                if expired and self.on_expired is not None:
                    self.on_expired(expired)
            elif not probed:
                self.store.ping()
                self._reached()
        except Exception as exc:  # noqa: BLE001 - the keeper outlives any database failure
            self._unreached(exc, now)

    def _taken(self, run_id: int) -> bool:
        """Whether a run missing from the renewal is no longer this replica's (abandoned, or claimed
        again by another), rather than just finished between the two reads."""
        record = self.store.get_run(run_id)
        return record is None or record.status in (RunStatus.RUNNING, RunStatus.ABANDONED)

    def _reached(self) -> None:
        if self.down_reason is not None:
            self.log.warning("state database reachable again", down_since=self.down_since.isoformat()
                             if self.down_since else None)
            self.down_reason = self.down_since = None
            self._next_renewal = 0.0  # renew at once: other replicas will soon expire stale leases
            if self.on_up is not None:
                self.on_up()
        if self._up_since is None:
            self._up_since = clock.monotonic()

    def _unreached(self, exc: Exception, now: float) -> None:
        if self.down_reason is None:
            self.log.warning("state database unreachable; claims paused", error=str(exc))
        self.mark_down(f"state database unreachable: {exc}")
        held = self.held()
        if held and now - self._last_renewed >= self.ttl.total_seconds() and self.on_lost is not None:
            self.on_lost(held, f"{LEASE_LOST}: leases not renewed for state.lease_ttl "
                               f"({self.ttl.total_seconds():g}s; the state database was unreachable)")


@dataclass
class _Write:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class Outbox:
    """The run-record writes of a replica, written through to ``store`` while it answers and
    queued (in order) while it does not.  Reads and claims go to ``store`` directly.

    The runner records through it as through a store (:meth:`as_store`); the loop calls
    :meth:`flush` when the database is back.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._queue: deque[_Write] = deque()
        self._lock = threading.Lock()
        self.log = get_logger()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _write(self, write: _Write) -> Any:
        with self._lock:
            if not self._queue:
                try:
                    return getattr(self.store, write.method)(*write.args, **write.kwargs)
                except StateError as exc:
                    self.log.warning("run record kept until the state database answers", call=write.method,
                                     error=str(exc))
            self._queue.append(write)
            return True  # pending: written once the database answers

    def flush(self) -> int:
        """Write queued records in order until one fails; return how many are still queued."""
        with self._lock:
            while self._queue:
                head = self._queue[0]
                try:
                    result = getattr(self.store, head.method)(*head.args, **head.kwargs)
                except StateError:
                    break
                self._queue.popleft()
                if head.method == "finish_run" and result is False:
                    self.log.warning("run record dropped: the run was taken over by another replica",
                                     run_id=head.args[0])
                elif head.method == "finish_run":
                    self.log.info("run record written after the outage", run_id=head.args[0],
                                  status=head.args[1])
            return len(self._queue)

    # --- the writes, as the store has them ---------------------------------------------------
    def finish_run(self, run_id: int, status: str, *, exit_code: int | None = None, signal: int | None = None,
                   duration: float | None = None, error: str | None = None, metrics: dict[str, Any] | None = None,
                   watermark: tuple[str, str] | None = None, ended_at: datetime | None = None) -> bool:
        return bool(self._write(_Write("finish_run", (run_id, status), dict(
            exit_code=exit_code, signal=signal, duration=duration, error=error, metrics=metrics,
            watermark=watermark, ended_at=ended_at or clock.now()))))

    def set_attempt(self, run_id: int, attempt: int) -> None:
        self._write(_Write("set_attempt", (run_id, attempt)))

    def record_skipped(self, job: str, slot: datetime, logical_date: date, trigger: str, reason: str,
                       status: RunStatus = RunStatus.SKIPPED, *, only_new: bool = False) -> bool:
        return bool(self._write(_Write("record_skipped", (job, slot, logical_date, trigger, reason, status),
                                       dict(only_new=only_new))))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)  # reads, claims, leases: straight to the store

    def as_store(self) -> StateStore:
        """This outbox where a :class:`StateStore` is expected (the runner records through it)."""
        from typing import cast

        return cast("StateStore", self)


@contextmanager
def keep_leases(store: StateStore, enabled: bool) -> Iterator[None]:
    """For foreground commands (``run-job``, ``backfill``) on a shared store: renew the leases of
    the runs they claim, so replicas do not take a long foreground run for a dead one."""
    keeper = LeaseKeeper(store, expire=False).start() if enabled else None
    try:
        yield
    finally:
        if keeper is not None:
            keeper.stop()


def claim_mode(trigger: str, resumes: bool) -> tuple[str, ...] | None:
    """``only_from`` for the claim of a request (see :meth:`StateStore.start_run`): a resumed run
    takes over only the row that was cut short; a scheduled, caught-up or ``after:`` slot only a
    slot nobody recorded yet (every replica decides it; the first claim wins, later ones, however
    late, find the row); a manual or API run any row not held (a rerun, as on one host)."""
    if resumes:
        return (RunStatus.ABANDONED, RunStatus.INTERRUPTED)
    if trigger in ("schedule", "catchup", "after"):
        return ()
    return None
