"""The state store's records, the same suite on every backend (``store`` is parametrized).

Pins what the daemon, runner, planner, alerts and CLI rely on: one row per (job, slot), reruns
reset that row, watermarks only with a success, history order, last fired slots never moving back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

UTC = UTC
BASE = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def slot(day: int, hour: int = 2) -> datetime:
    return datetime(2026, 3, day, hour, 0, tzinfo=UTC)


def run(store: Any, job: str, when: datetime, status: str, **kwargs: Any) -> int:
    run_id = store.start_run(job, when, when.date() - timedelta(days=1), "schedule")
    assert run_id is not None
    assert store.finish_run(run_id, status, **kwargs) is True
    return run_id


def test_a_run_is_recorded_from_start_to_finish(store: Any) -> None:
    run_id = store.start_run("sales", slot(1), date(2026, 2, 28), "schedule")
    started = store.get_run(run_id)
    assert (started.job, started.slot, started.logical_date, started.trigger) == ("sales", slot(1), date(2026, 2, 28),
                                                                                  "schedule")
    assert started.status == "running" and started.attempt == 1 and started.started_at is not None
    assert started.ended_at is None and started.slot.utcoffset() == timedelta(0)
    store.set_attempt(run_id, 2)
    assert store.finish_run(run_id, "failed", exit_code=3, duration=1.5, error="exited with code 3",
                            metrics={"rows_written": 7, "pages": 2}) is True
    done = store.find_run("sales", slot(1))
    assert done.id == run_id and done.status == "failed" and done.attempt == 2 and done.exit_code == 3
    assert done.duration == 1.5 and done.rows == 7 and done.metrics == {"rows_written": 7, "pages": 2}
    assert done.error == "exited with code 3" and done.ended_at >= done.started_at
    assert done.as_json()["slot"] == "2026-03-01T02:00:00+00:00"
    assert store.get_run(run_id + 1000) is None and store.find_run("sales", slot(2)) is None


def test_finish_run_rejects_a_status_that_is_not_final(store: Any) -> None:
    run_id = store.start_run("j", slot(1), date(2026, 2, 28), "schedule")
    with pytest.raises(ValueError):
        store.finish_run(run_id, "running")


def test_a_rerun_of_a_finished_slot_reuses_its_row(store: Any) -> None:
    first = run(store, "j", slot(1), "failed", error="boom", exit_code=1, metrics={"rows": 1})
    again = store.start_run("j", slot(1), date(2026, 2, 28), "manual", attempt=1)
    assert again == first
    record = store.get_run(first)
    assert record.status == "running" and record.trigger == "manual"
    assert record.error is None and record.exit_code is None and record.rows is None and record.metrics == {}
    assert [r.id for r in store.history("j")] == [first]


def test_a_running_slot_is_not_started_twice(store: Any, open_store: Any) -> None:
    run_id = store.start_run("j", slot(1), date(2026, 2, 28), "schedule")
    assert store.start_run("j", slot(1), date(2026, 2, 28), "manual") is None
    assert open_store().start_run("j", slot(1), date(2026, 2, 28), "manual") is None  # another connection
    assert store.start_run("j", slot(2), date(2026, 3, 1), "schedule") not in (None, run_id)  # other slots may run


def test_forbid_overlap_refuses_while_another_slot_of_the_job_runs(store: Any, open_store: Any) -> None:
    first = store.start_run("j", slot(1), date(2026, 2, 28), "schedule", forbid_overlap=True)
    other = open_store()
    assert other.start_run("j", slot(2), date(2026, 3, 1), "schedule", forbid_overlap=True) is None
    assert other.find_run("j", slot(2)) is None  # a refused claim writes nothing
    assert other.start_run("k", slot(2), date(2026, 3, 1), "schedule", forbid_overlap=True) is not None
    store.finish_run(first, "success")
    assert other.start_run("j", slot(2), date(2026, 3, 1), "schedule", forbid_overlap=True) is not None


def test_watermark_is_written_only_with_a_success(store: Any) -> None:
    assert store.watermark("j") is None
    run(store, "j", slot(1), "success", watermark=("j", "2026-02-28T23:59:59Z"))
    assert store.watermark("j") == "2026-02-28T23:59:59Z"
    run(store, "j", slot(2), "success", watermark=("j", "2026-03-01T23:59:59Z"))
    assert store.watermark("j") == "2026-03-01T23:59:59Z"
    assert store.watermark("other") is None


def test_record_skipped_never_overwrites_a_running_or_successful_row(store: Any) -> None:
    store.record_skipped("j", slot(1), date(2026, 2, 28), "schedule", "a run of j is active")
    skipped = store.find_run("j", slot(1))
    assert skipped.status == "skipped" and skipped.attempt == 0 and skipped.error == "a run of j is active"
    running = store.start_run("j", slot(2), date(2026, 3, 1), "schedule")
    store.record_skipped("j", slot(2), date(2026, 3, 1), "schedule", "no", status="interrupted")
    assert store.get_run(running).status == "running"
    store.finish_run(running, "success")
    store.record_skipped("j", slot(2), date(2026, 3, 1), "schedule", "no")
    assert store.get_run(running).status == "success"
    failed = run(store, "j", slot(3), "failed")
    store.record_skipped("j", slot(3), date(2026, 3, 2), "schedule", "queued at stop", status="interrupted")
    assert store.get_run(failed).status == "interrupted" and store.get_run(failed).error == "queued at stop"
    # a skipped row is a slot that never ran: it can be claimed
    assert store.start_run("j", slot(1), date(2026, 2, 28), "catchup") == skipped.id


def test_history_is_newest_first_and_limited(store: Any) -> None:
    ids = [run(store, "a" if i % 2 else "b", slot(i + 1), "success") for i in range(5)]
    assert [r.id for r in store.history()] == list(reversed(ids))
    assert [r.id for r in store.history(limit=2)] == list(reversed(ids))[:2]
    assert [r.id for r in store.history("a")] == [ids[3], ids[1]]
    assert store.history("none") == []


def test_last_runs_passes_over_skipped_rows(store: Any) -> None:
    done = run(store, "j", slot(1), "failed")
    store.record_skipped("j", slot(2), date(2026, 3, 1), "schedule", "busy")
    live = store.start_run("k", slot(1), date(2026, 2, 28), "schedule")
    latest = store.last_runs()
    assert set(latest) == {"j", "k"}
    assert latest["j"].id == done and latest["k"].id == live and latest["k"].status == "running"


def test_success_queries(store: Any) -> None:
    assert store.last_success("j") is None and store.failure_streak("j") == 0
    run(store, "j", slot(1), "success")
    first_success = store.last_success("j")
    assert first_success is not None and first_success.tzinfo is not None
    for day, status in ((2, "failed"), (3, "skipped"), (4, "timeout"), (5, "abandoned")):
        if status == "skipped":
            store.record_skipped("j", slot(day), date(2026, 3, day - 1), "schedule", "busy")
        else:
            run(store, "j", slot(day), status)
    store.start_run("j", slot(6), date(2026, 3, 5), "schedule")  # running: not counted
    assert store.failure_streak("j") == 3
    assert store.succeeded("j", date(2026, 2, 28)) is True
    assert store.succeeded("j", date(2026, 3, 1)) is False
    assert store.last_success("j") == first_success
    run(store, "j", slot(7), "success")
    assert store.failure_streak("j") == 0 and store.last_success("j") > first_success


def test_last_fired_only_moves_forward(store: Any) -> None:
    assert store.last_fired("j") is None
    store.set_last_fired("j", slot(2))
    store.set_last_fired("j", slot(1))
    assert store.last_fired("j") == slot(2)
    store.set_last_fired_many({"j": slot(3), "k": slot(1), "a": slot(5)})
    assert (store.last_fired("j"), store.last_fired("k"), store.last_fired("a")) == (slot(3), slot(1), slot(5))
    assert store.last_fired("j").utcoffset() == timedelta(0)


def test_last_fired_keeps_the_instant_of_other_timezones(store: Any) -> None:
    berlin = timezone(timedelta(hours=1))
    store.set_last_fired("j", datetime(2026, 3, 1, 3, 0, tzinfo=berlin))
    assert store.last_fired("j") == slot(1)


def test_advance_last_fired_is_a_compare_and_set(store: Any, open_store: Any) -> None:
    other = open_store()
    assert store.advance_last_fired("j", None, slot(1)) is True
    assert other.advance_last_fired("j", None, slot(1)) is False  # someone fired it first
    assert other.advance_last_fired("j", slot(1), slot(2)) is True
    assert store.advance_last_fired("j", slot(1), slot(3)) is False  # stale view: nothing changes
    assert store.last_fired("j") == slot(2)


def test_abandon_running_on_start_marks_runs_of_a_gone_process(store: Any) -> None:
    run_id = store.start_run("j", slot(1), date(2026, 2, 28), "schedule")  # this very process: a past life
    finished = run(store, "j", slot(2), "success")
    [abandoned] = store.abandon_running("scheduler stopped while the run was active")
    assert (abandoned.id, abandoned.job) == (run_id, "j")
    record = store.get_run(run_id)
    assert record.status == "abandoned" and record.error == "scheduler stopped while the run was active"
    assert record.ended_at is not None
    assert store.get_run(finished).status == "success"
    assert store.abandon_running() == []


def test_ping_and_owner(store: Any, open_store: Any) -> None:
    assert store.ping() is True
    assert store.owner != open_store().owner and store.owner.count(":") == 2
