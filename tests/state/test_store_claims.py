"""Claims and leases for several schedulers sharing one store, on every backend.

Races use real threads (each with its own store, i.e. its own connection) and real processes,
released together by a barrier; the assertions hold for every interleaving, so no timing matters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from freezegun import freeze_time
from store_worker import run_workers

from scheduler import clock

UTC = UTC
LOGICAL = date(2026, 2, 28)


def slot(n: int) -> datetime:
    return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=n)


def race(stores: list[Any], action: Callable[[Any], Any]) -> list[Any]:
    """Call ``action(store)`` for every store at once (one thread each); results in store order."""
    barrier = threading.Barrier(len(stores), timeout=60)

    def go(store: Any) -> Any:
        barrier.wait()
        return action(store)

    with ThreadPoolExecutor(len(stores)) as pool:
        return list(pool.map(go, stores))


# --- leases -------------------------------------------------------------------------------------
def test_a_claim_carries_the_owner_whose_renewals_keep_it(store: Any, open_store: Any) -> None:
    other = open_store()
    mine = store.start_run("j", slot(1), LOGICAL, "schedule")
    done = store.start_run("j", slot(2), LOGICAL, "schedule")
    store.finish_run(done, "success")
    theirs = other.start_run("k", slot(1), LOGICAL, "schedule")
    assert store.renew_leases(store.owner, timedelta(hours=1)) == [mine]
    assert other.renew_leases(other.owner, timedelta(hours=1)) == [theirs]
    assert store.renew_leases("gone:1:00", timedelta(hours=1)) == []
    assert store.expire_leases(clock.now() + timedelta(minutes=30)) == []  # renewed past that
    expired = store.expire_leases(clock.now() + timedelta(hours=2))
    assert sorted(r.id for r in expired) == sorted([mine, theirs])


def test_expired_leases_are_abandoned_once_with_the_owner_named(store: Any) -> None:
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
    assert store.expire_leases() == []  # the fresh lease holds
    later = clock.now() + store.lease_ttl + timedelta(seconds=1)
    [record] = store.expire_leases(later)
    assert record.id == run_id and record.status == "abandoned" and record.ended_at == later
    assert record.error.startswith(f"lease of {store.owner} expired at ") and "\n" not in record.error
    assert store.get_run(run_id).status == "abandoned"
    assert store.expire_leases(later) == []
    assert store.renew_leases(store.owner, timedelta(hours=1)) == []  # the owner learns it lost the run


def test_a_live_process_on_this_host_keeps_its_slot_without_renewing(store: Any, open_store: Any) -> None:
    other = open_store()  # same host: the process itself is checked, not the lease
    with freeze_time("2026-03-01 02:00:05", tz_offset=0) as frozen:
        store.start_run("j", slot(2), LOGICAL, "schedule")
        frozen.tick(store.lease_ttl * 10)
        assert other.start_run("j", slot(2), LOGICAL, "manual") is None
        assert other.start_run("j", slot(3), LOGICAL, "schedule", forbid_overlap=True) is None


def test_a_slot_whose_lease_ran_out_is_taken_over_and_the_late_owner_records_nothing(
        store: Any, open_store: Any) -> None:
    other = open_store()
    other.host = "replica-b"  # another host: only the lease tells whether the run lives
    with freeze_time("2026-03-01 02:00:05", tz_offset=0) as frozen:
        run_id = store.start_run("j", slot(2), LOGICAL, "schedule", forbid_overlap=True)
        assert other.start_run("j", slot(2), LOGICAL, "schedule") is None
        assert other.start_run("j", slot(3), LOGICAL, "schedule", forbid_overlap=True) is None
        frozen.tick(store.lease_ttl + timedelta(seconds=1))  # the owner stopped renewing
        assert other.start_run("j", slot(3), LOGICAL, "schedule", forbid_overlap=True) is not None
        assert other.start_run("j", slot(2), LOGICAL, "catchup") == run_id  # same row, new owner
    assert store.finish_run(run_id, "success", watermark=("j", "late")) is False
    store.set_attempt(run_id, 5)
    assert store.get_run(run_id).status == "running" and store.get_run(run_id).attempt == 1
    assert store.watermark("j") is None
    assert other.finish_run(run_id, "success", watermark=("j", "w")) is True
    assert store.get_run(run_id).status == "success" and store.watermark("j") == "w"


def test_an_owner_whose_lease_expired_unclaimed_still_records_its_outcome(store: Any) -> None:
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
    store.expire_leases(clock.now() + timedelta(hours=1))
    assert store.finish_run(run_id, "success", watermark=("j", "w")) is True
    assert store.get_run(run_id).status == "success" and store.watermark("j") == "w"


# --- races ----------------------------------------------------------------------------------------
def test_racing_claims_of_one_slot_have_exactly_one_winner(open_store: Any) -> None:
    stores = [open_store() for _ in range(8)]
    for n in range(5):
        results = race(stores, lambda s, n=n: s.start_run("race", slot(n), LOGICAL, "schedule"))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert stores[0].find_run("race", slot(n)).id == winners[0]


def test_racing_claims_of_a_forbid_job_start_one_run_at_a_time(open_store: Any) -> None:
    stores = [open_store() for _ in range(4)]
    for n in range(5):  # each replica wants a different slot; only one job run may be active
        results = race(stores, lambda s, n=n: s.start_run(
            "forbid", slot(10 * n + stores.index(s)), LOGICAL, "schedule", forbid_overlap=True))
        winners = [(i, r) for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1, results
        [(i, run_id)] = winners
        assert [r.id for r in stores[0].history("forbid", 100) if r.status == "running"] == [run_id]
        stores[i].finish_run(run_id, "success")


def test_concurrent_lease_expiry_abandons_each_run_once(open_store: Any) -> None:
    owner = open_store()
    ids = {owner.start_run(f"j{n % 3}", slot(n), LOGICAL, "schedule") for n in range(12)}
    later = clock.now() + owner.lease_ttl + timedelta(minutes=1)
    results = race([open_store() for _ in range(4)], lambda s: s.expire_leases(later))
    abandoned = [r.id for batch in results for r in batch]
    assert sorted(abandoned) == sorted(ids)  # every run, none twice
    assert all(r.status == "abandoned" for r in owner.history(limit=100))


def test_racing_cursor_advances_have_exactly_one_winner(open_store: Any) -> None:
    stores = [open_store() for _ in range(6)]
    assert race(stores, lambda s: s.advance_last_fired("j", None, slot(1))).count(True) == 1
    assert race(stores, lambda s: s.advance_last_fired("j", slot(1), slot(2))).count(True) == 1
    assert stores[0].last_fired("j") == slot(2)


def test_racing_processes_claim_a_slot_once(backend: Any, store: Any) -> None:
    results = run_workers(backend.name, str(backend.target), "claim", 4)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1, results
    assert store.find_run("race", datetime(2026, 3, 1, 2, tzinfo=UTC)).id == winners[0]


# --- claims of replicas: first record decides, resumes once ------------------------------------
def test_a_scheduled_claim_takes_only_a_slot_nobody_recorded(store: Any, open_store: Any) -> None:
    other = open_store()
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule", only_from=())
    assert run_id is not None
    store.finish_run(run_id, "success")
    # a replica deciding the same slot later finds its row: the slot is not run twice
    assert other.start_run("j", slot(1), LOGICAL, "schedule", only_from=()) is None
    assert other.start_run("j", slot(1), LOGICAL, "manual") == run_id  # a rerun is still possible
    assert store.get_run(run_id).status == "running"


def test_a_resume_claims_a_cut_short_row_once(store: Any, open_store: Any) -> None:
    other = open_store()
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
    [record] = store.expire_leases(clock.now() + store.lease_ttl + timedelta(seconds=1))
    resumable = ("abandoned", "interrupted")
    results = race([store, other], lambda s: s.start_run("j", slot(1), LOGICAL, "catchup", only_from=resumable))
    assert [r for r in results if r is not None] == [record.id] == [run_id]
    winner = store if results[0] is not None else other
    winner.finish_run(run_id, "success")
    assert store.start_run("j", slot(1), LOGICAL, "catchup", only_from=resumable) is None


def test_a_skip_recorded_only_new_never_overwrites_a_slot_record(store: Any, open_store: Any) -> None:
    other = open_store()
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
    store.finish_run(run_id, "failed", error="boom")
    assert other.record_skipped("j", slot(1), LOGICAL, "schedule", "forbid", only_new=True) is False
    assert store.get_run(run_id).status == "failed"
    results = race([store, other], lambda s: s.record_skipped("j", slot(2), LOGICAL, "schedule", "forbid",
                                                              only_new=True))
    assert sorted(results) == [False, True]
    assert [r.status for r in store.history("j") if r.slot == slot(2)] == ["skipped"]


def test_a_record_written_late_keeps_the_time_the_run_ended(store: Any) -> None:
    run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
    ended = clock.now() - timedelta(minutes=3)
    assert store.finish_run(run_id, "success", ended_at=ended) is True
    assert store.get_run(run_id).ended_at == ended


def test_a_sibling_renews_the_leases_of_its_store_on_a_connection_of_its_own(store: Any) -> None:
    sibling = store.sibling()
    try:
        run_id = store.start_run("j", slot(1), LOGICAL, "schedule")
        assert sibling.owner == store.owner and sibling.lease_ttl == store.lease_ttl
        assert sibling.renew_leases(sibling.owner, timedelta(hours=1)) == [run_id]
        assert sibling.finish_run(run_id, "success") is True  # the same owner
    finally:
        sibling.close()
