"""Every run status round-trips through every backend: written from :class:`RunStatus`, stored as
its plain string (the values rows, JSON output and metrics labels have always held), read back as
the same enum member."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from typing import Any

import pytest

from scheduler.status import FINAL_STATUSES, RunStatus

STORED = ["running", "success", "failed", "timeout", "interrupted", "skipped", "abandoned"]


def slot(hour: int) -> datetime:
    return datetime(2026, 3, 1, hour, 0, tzinfo=UTC)


def raw_statuses(backend: Any) -> dict[str, str]:
    """``job -> status`` exactly as the database holds it, read past the store."""
    if backend.name == "postgres":
        import psycopg

        with psycopg.connect(backend.target) as conn:
            rows = conn.execute("SELECT job, status FROM runs").fetchall()
    else:
        conn = sqlite3.connect(backend.target)
        try:
            rows = conn.execute("SELECT job, status FROM runs").fetchall()
        finally:
            conn.close()
    return {job: status for job, status in rows}


def test_the_vocabulary_is_the_stored_strings() -> None:
    assert [s.value for s in RunStatus] == STORED
    assert all(RunStatus(text) == text and str(RunStatus(text)) == text for text in STORED)
    assert FINAL_STATUSES == tuple(RunStatus(text) for text in STORED[1:])
    assert json.dumps({"status": RunStatus.TIMEOUT}) == '{"status": "timeout"}'
    assert f"{RunStatus.SKIPPED}" == "skipped"


def test_every_status_round_trips(backend: Any) -> None:
    store = backend.open()
    day = date(2026, 2, 28)
    ids: dict[RunStatus, int] = {}
    for hour, status in enumerate(RunStatus):
        run_id = store.start_run(f"job_{status}", slot(hour), day, "schedule")
        assert run_id is not None
        ids[status] = run_id
        if status is not RunStatus.RUNNING:
            assert store.finish_run(run_id, status, error=f"ended {status}") is True
    for status, run_id in ids.items():
        record = store.get_run(run_id)
        assert type(record.status) is RunStatus and record.status is status
        assert record.as_json()["status"] == status.value and json.loads(json.dumps(record.as_json()))["status"] == str(
            status)
    assert {r.job: r.status for r in store.history(limit=100)} == {f"job_{s}": s for s in RunStatus}
    assert raw_statuses(backend) == {f"job_{s}": s.value for s in RunStatus}
    assert all(type(value) is str for value in raw_statuses(backend).values())


@pytest.mark.parametrize("status", [RunStatus.SKIPPED, RunStatus.INTERRUPTED])
def test_slots_not_run_round_trip(backend: Any, status: RunStatus) -> None:
    store = backend.open()
    store.record_skipped("j", slot(1), date(2026, 2, 28), "schedule", "not run", status)
    record = store.find_run("j", slot(1))
    assert type(record.status) is RunStatus and record.status is status
    assert raw_statuses(backend) == {"j": status.value}


def test_abandoned_runs_read_back_as_the_enum(backend: Any) -> None:
    store = backend.open()
    run_id = store.start_run("j", slot(1), date(2026, 2, 28), "schedule")
    [abandoned] = store.abandon_running()  # a row of this very process: its previous life
    assert abandoned.id == run_id
    assert store.get_run(run_id).status is RunStatus.ABANDONED
    assert raw_statuses(backend) == {"j": "abandoned"}
