"""What only the PostgreSQL store has: a connection that can drop, and a shared server schema."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from scheduler import clock
from scheduler.errors import StateError
from scheduler.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres
SLOT = datetime(2026, 3, 1, 2, tzinfo=UTC)


def _kill_connections(cluster: Any, url: str) -> int:
    dbname = url.rsplit("/", 1)[1]
    with cluster.admin() as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = %s AND application_name = 'scheduler'", (dbname,)).fetchall())


def test_a_dropped_connection_is_reopened(pg_cluster: Any, pg_url: str) -> None:
    store = PostgresStore.open(pg_url)
    try:
        run_id = store.start_run("j", SLOT, date(2026, 2, 28), "schedule")
        assert _kill_connections(pg_cluster, pg_url) == 1
        assert store.get_run(run_id).status == "running"  # a read is retried on a new connection
        assert _kill_connections(pg_cluster, pg_url) == 1
        assert store.finish_run(run_id, "success") is True  # so is a write whose BEGIN failed
        assert store.get_run(run_id).status == "success"
        assert _kill_connections(pg_cluster, pg_url) == 1
        assert store.ping() is True
    finally:
        store.close()


def test_a_failing_write_is_a_state_error_with_the_password_masked(pg_cluster: Any, pg_url: str) -> None:
    store = PostgresStore.open(pg_url)
    try:
        with pg_cluster.admin(pg_url.rsplit("/", 1)[1]) as conn:
            conn.execute("REVOKE ALL ON runs FROM PUBLIC")
            conn.execute("ALTER TABLE runs OWNER TO postgres")  # the scheduler's role may no longer write
        with pytest.raises(StateError, match="state store write failed at postgresql://sched:\\*\\*\\*@") as caught:
            store.start_run("j", SLOT, date(2026, 2, 28), "schedule")
        assert pg_cluster.password not in str(caught.value) and "permission denied" in str(caught.value)
        assert store.ping() is True  # the connection survives a failed statement
    finally:
        store.close()


def test_times_are_stored_as_timestamptz(pg_url: str) -> None:
    store = PostgresStore.open(pg_url)
    try:
        store.start_run("j", SLOT, date(2026, 2, 28), "schedule")
        with psycopg.connect(pg_url) as conn:
            types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                      "WHERE table_name = 'runs'").fetchall())
            lease = conn.execute("SELECT lease_until - started_at FROM runs").fetchone()[0]
        assert types["slot"] == types["started_at"] == types["lease_until"] == "timestamp with time zone"
        assert types["logical_date"] == "date" and types["metrics"] == "jsonb"
        assert lease == store.lease_ttl
    finally:
        store.close()


def test_a_starting_replica_abandons_only_runs_that_are_provably_gone(pg_url: str) -> None:
    other = PostgresStore.open(pg_url)
    other.host = "replica-b"
    starting = PostgresStore.open(pg_url)
    try:
        live = other.start_run("j", SLOT, date(2026, 2, 28), "schedule")  # another replica, lease running
        stale = other.start_run("j", SLOT + timedelta(hours=1), date(2026, 2, 28), "schedule")
        with psycopg.connect(pg_url, autocommit=True) as conn:  # that replica stopped renewing one lease
            conn.execute("UPDATE runs SET lease_until = %s WHERE id = %s", (clock.now() - timedelta(seconds=1), stale))
        mine = starting.start_run("k", SLOT, date(2026, 2, 28), "schedule")  # this very pid: a past life
        assert sorted(r.id for r in starting.abandon_running()) == sorted([stale, mine])
        assert starting.get_run(live).status == "running"
    finally:
        other.close()
        starting.close()
