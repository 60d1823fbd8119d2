"""Both backends implement the :class:`StateStore` protocol, member for member."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from scheduler.state import SQLiteStore
from scheduler.stores.postgres import PostgresStore
from scheduler.stores.protocol import StateStore

MEMBERS = sorted(name for name in vars(StateStore) if not name.startswith("_")
                 and callable(getattr(StateStore, name)))


def test_the_protocol_names_every_store_call_the_package_makes() -> None:
    used = {"ping", "close", "start_run", "set_attempt", "finish_run", "record_skipped", "abandon_running",
            "get_run", "find_run", "history", "last_runs", "succeeded", "last_success", "failure_streak",
            "watermark", "last_fired", "set_last_fired", "set_last_fired_many"}
    claims = {"advance_last_fired", "renew_leases", "expire_leases", "sibling"}
    console = {"write_output", "read_output", "clear_output", "prune_output", "control_version", "set_paused",
               "job_controls", "request_trigger", "claim_triggers", "get_trigger", "cancel_trigger"}
    assert set(MEMBERS) == used | claims | console
    assert set(StateStore.__annotations__) == {"owner", "host", "lease_ttl"}


@pytest.mark.parametrize("cls", [SQLiteStore, PostgresStore])
@pytest.mark.parametrize("name", MEMBERS)
def test_signatures_match_the_protocol(cls: type, name: str) -> None:
    expected = inspect.signature(getattr(StateStore, name))
    actual = inspect.signature(getattr(cls, name))
    assert actual == expected, f"{cls.__name__}.{name}{actual} != StateStore.{name}{expected}"


def test_instances_satisfy_the_runtime_protocol(tmp_path: Path) -> None:
    sqlite = SQLiteStore.open(tmp_path / "state.db")
    try:
        assert isinstance(sqlite, StateStore)
    finally:
        sqlite.close()
    postgres = PostgresStore("postgresql://sched@127.0.0.1:1/none")  # constructed, never connected
    assert isinstance(postgres, StateStore)
    assert not isinstance(object(), StateStore)


def test_the_old_name_still_opens_the_sqlite_store() -> None:
    from scheduler.state import StateStore as Legacy

    assert Legacy is SQLiteStore
