"""Schema versions: the PostgreSQL migration list, concurrent migration, and the SQLite upgrade."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from store_worker import run_workers

from scheduler.state import SQLiteStore
from scheduler.stores.migrations import LATEST, MIGRATIONS, migrate, schema_version

UTC = UTC
SLOT = datetime(2026, 3, 1, 2, tzinfo=UTC)


def test_the_migration_list_is_numbered_without_gaps() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST == len(MIGRATIONS)
    assert all(m.description and m.sql.strip() for m in MIGRATIONS)


@pytest.mark.postgres
def test_migrate_applies_each_version_once(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema_version(conn) == 0
        assert migrate(conn, target=1) == [1]
        assert schema_version(conn) == 1
        assert migrate(conn) == list(range(2, LATEST + 1))
        assert migrate(conn) == []
        rows = conn.execute("SELECT version, description FROM scheduler_schema ORDER BY version").fetchall()
    assert rows == [(m.version, m.description) for m in MIGRATIONS]


@pytest.mark.postgres
def test_a_version_1_database_is_upgraded_with_its_records(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, target=1)
        conn.execute("INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, ended_at) "
                     "VALUES ('j', %s, %s, 'schedule', 1, 'success', %s, %s)", (SLOT, date(2026, 2, 28), SLOT, SLOT))
    from scheduler.stores.postgres import PostgresStore

    store = PostgresStore.open(pg_url)
    try:
        [record] = store.history()
        assert (record.job, record.slot, record.status) == ("j", SLOT, "success")
        assert store.start_run("j", SLOT, date(2026, 2, 28), "manual") == record.id  # rerun with a lease
        assert store.renew_leases(store.owner, store.lease_ttl) == [record.id]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_database_of_a_newer_scheduler_is_refused(pg_url: str) -> None:
    from scheduler.errors import StateError
    from scheduler.stores.postgres import PostgresStore

    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO scheduler_schema (version, description) VALUES (%s, 'future')", (LATEST + 1,))
    with pytest.raises(StateError, match=f"schema version {LATEST + 1}, newer than this scheduler's {LATEST}"):
        PostgresStore.open(pg_url)


@pytest.mark.postgres
def test_replicas_starting_at_once_migrate_the_schema_once(pg_url: str) -> None:
    results: list[Any] = run_workers("postgres", pg_url, "migrate", 3)
    applied = sorted(v for versions in results for v in versions)
    assert applied == [m.version for m in MIGRATIONS]  # each version by exactly one process
    assert [r for r in results if r] == [[m.version for m in MIGRATIONS]]  # all of them by one
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM scheduler_schema").fetchone()[0] == LATEST


V1_SQLITE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, slot TEXT NOT NULL, logical_date TEXT NOT NULL,
    trigger TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, exit_code INTEGER,
    signal INTEGER, started_at TEXT, ended_at TEXT, duration REAL, rows INTEGER, metrics TEXT, error TEXT,
    pid INTEGER, host TEXT, UNIQUE (job, slot)
);
INSERT INTO runs (job, slot, logical_date, trigger, attempt, status, started_at, pid, host)
VALUES ('j', '2026-03-01T02:00:00+00:00', '2026-02-28', 'schedule', 1, 'running',
        '2026-03-01T02:00:01+00:00', 2147483647, 'elsewhere');
CREATE TABLE watermarks (job TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE last_fired (job TEXT PRIMARY KEY, slot TEXT NOT NULL);
"""


def test_a_version_1_sqlite_file_gains_the_lease_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SQLITE)
    store = SQLiteStore.open(path)
    try:
        [record] = store.history()
        assert record.status == "running" and record.slot == SLOT
        assert store.expire_leases() == []  # a row from before leases never expires by lease
        [gone] = store.abandon_running()  # its process cannot be checked from here: the daemon's start rule
        assert gone.id == record.id and store.get_run(record.id).status == "abandoned"
        assert store.start_run("j", SLOT, date(2026, 2, 28), "manual") == record.id
        assert store.renew_leases(store.owner, store.lease_ttl) == [record.id]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    SQLiteStore.open(path).close()  # opening an up-to-date file changes nothing
