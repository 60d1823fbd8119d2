"""The PostgreSQL schema as a plain list of migrations, applied by the scheduler itself.

Invariants:

* :data:`MIGRATIONS` is append-only: versions run 1, 2, 3... and an applied migration is never
  edited (a change is a new migration);
* each applied version is one row of ``scheduler_schema``; all pending migrations run in one
  transaction, so a crash leaves the schema at the old version or the new one, never between;
* :func:`migrate` holds a transaction-level advisory lock while it reads the version and applies
  what is missing, so replicas starting at once apply each migration exactly once (the others
  wait, then find nothing left to do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIGRATION_LOCK = 0x5C4ED01E  # advisory lock key: "schema migrations of this scheduler"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "run records, watermarks and last fired slots", """
        CREATE TABLE runs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job TEXT NOT NULL,
            slot TIMESTAMPTZ NOT NULL,
            logical_date DATE NOT NULL,
            trigger TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,
            exit_code INTEGER,
            signal INTEGER,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ,
            duration DOUBLE PRECISION,
            rows BIGINT,
            metrics JSONB,
            error TEXT,
            pid INTEGER,
            host TEXT,
            CONSTRAINT runs_job_slot UNIQUE (job, slot)
        );
        CREATE INDEX runs_job_started ON runs (job, started_at);
        CREATE INDEX runs_status ON runs (status);
        CREATE TABLE watermarks (job TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
        CREATE TABLE last_fired (job TEXT PRIMARY KEY, slot TIMESTAMPTZ NOT NULL);
    """),
    Migration(2, "run leases for several scheduler replicas", """
        ALTER TABLE runs ADD COLUMN owner TEXT, ADD COLUMN lease_until TIMESTAMPTZ;
        CREATE INDEX runs_running_lease ON runs (lease_until) WHERE status = 'running';
        CREATE INDEX runs_running_owner ON runs (owner) WHERE status = 'running';
    """),
    Migration(3, "run output, job controls (pause) and run requests (trigger)", """
        CREATE TABLE run_output (
            run_id BIGINT NOT NULL,
            seq INTEGER NOT NULL,
            stream TEXT NOT NULL,
            line TEXT NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE TABLE job_control (
            job TEXT PRIMARY KEY,
            paused BOOLEAN NOT NULL,
            reason TEXT,
            changed_at TIMESTAMPTZ NOT NULL,
            changed_by TEXT NOT NULL,
            run_id BIGINT
        );
        CREATE TABLE run_requests (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job TEXT NOT NULL,
            logical_date DATE,
            trigger TEXT NOT NULL,
            requested_at TIMESTAMPTZ NOT NULL,
            claimed_by TEXT,
            claimed_at TIMESTAMPTZ,
            slot TIMESTAMPTZ
        );
        CREATE INDEX run_requests_open ON run_requests (id) WHERE claimed_by IS NULL;
        CREATE TABLE control_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
        INSERT INTO control_version (id, version) VALUES (1, 0);
    """),
)

LATEST = MIGRATIONS[-1].version


def migrate(conn: Any, target: int = LATEST) -> list[int]:
    """Bring the schema of ``conn``'s database to ``target``; return the versions applied here.

    ``conn`` is a psycopg connection in autocommit mode (the migration opens its own transaction).
    """
    from psycopg.rows import tuple_row

    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        cur.execute("""CREATE TABLE IF NOT EXISTS scheduler_schema (
                            version INTEGER PRIMARY KEY,
                            description TEXT NOT NULL,
                            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())""")
        current = cur.execute("SELECT coalesce(max(version), 0) FROM scheduler_schema").fetchone()[0]
        applied = []
        for migration in MIGRATIONS:
            if current < migration.version <= target:
                cur.execute(migration.sql)
                cur.execute("INSERT INTO scheduler_schema (version, description) VALUES (%s, %s)",
                             (migration.version, migration.description))
                applied.append(migration.version)
    return applied


def schema_version(conn: Any) -> int:
    """The version the database is at (0 for an empty database)."""
    from psycopg.rows import tuple_row

    with conn.cursor(row_factory=tuple_row) as cur:
        if not cur.execute("SELECT to_regclass('scheduler_schema') IS NOT NULL").fetchone()[0]:
            return 0
        return int(cur.execute("SELECT coalesce(max(version), 0) FROM scheduler_schema").fetchone()[0])
