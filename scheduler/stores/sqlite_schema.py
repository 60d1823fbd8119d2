"""The SQLite state store's file: creating it, its tables and their migrations, and the one-line
error (with the fix) when this process may not write it.

Invariants: :func:`connect` leaves the file at :data:`SCHEMA_VERSION` (tables created on a new
file, columns added to an old one, in one ``BEGIN IMMEDIATE`` transaction, so processes opening
an old file at once migrate it once), in WAL mode with a busy timeout; a file or directory this
process may not write is a :class:`~scheduler.errors.StoreNotWritable` naming it, never SQLite's
"unable to open database file".
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from scheduler.errors import StoreNotWritable
from scheduler.stores.sqlite_console import CONSOLE_SCHEMA

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    slot TEXT NOT NULL,
    logical_date TEXT NOT NULL,
    trigger TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    started_at TEXT,
    ended_at TEXT,
    duration REAL,
    rows INTEGER,
    metrics TEXT,
    error TEXT,
    pid INTEGER,
    host TEXT,
    owner TEXT,
    lease_until TEXT,
    UNIQUE (job, slot)
);
CREATE INDEX IF NOT EXISTS runs_job_started ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS watermarks (job TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS last_fired (job TEXT PRIMARY KEY, slot TEXT NOT NULL);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` (creating directory, file and tables as needed) and migrate it.  Raises
    :class:`StoreNotWritable` when this process may not write the file or its directory (WAL
    needs both)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if (blocked := unwritable(path)) is not None:  # before SQLite says "unable to open database file"
            raise not_writable(path, blocked)
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        conn.executescript(CONSOLE_SCHEMA)  # version 2 -> 3: run output, job controls, run requests
        conn.execute("BEGIN IMMEDIATE")  # several processes may open a version-1 file at once
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        for name in ("owner", "lease_until"):  # version 1 -> 2: run leases
            if name not in columns:
                conn.execute(f"ALTER TABLE runs ADD COLUMN {name} TEXT")
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except (PermissionError, sqlite3.OperationalError):
        if (blocked := unwritable(path)) is None:
            raise
        raise not_writable(path, blocked) from None
    return conn


def unwritable(path: Path) -> Path | None:
    """The first thing keeping this process from writing ``path`` (a file, maybe not there yet):
    the file or a WAL companion it may not write, else the nearest existing directory it may not
    create files in; ``None`` when nothing does (root passes every check)."""
    for item in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if item.exists() and not os.access(item, os.R_OK | os.W_OK):
            return item
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return None if os.access(directory, os.W_OK | os.X_OK) else directory


def not_writable(path: Path, blocked: Path, what: str = "the state store") -> StoreNotWritable:
    """The one-line error for a path this process may not write (``blocked`` is why), with the fix."""
    uid = os.getuid()
    try:
        owner = blocked.stat().st_uid
    except OSError:
        owner = None
    fix_dir = blocked if blocked.is_dir() else blocked.parent
    try:
        read_only = bool(os.statvfs(fix_dir).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:  # no chown helps there
        return StoreNotWritable(f"cannot open {what} {path}: {fix_dir} is on a read-only filesystem",
                                "fix: mount the data volume read-write (no :ro)")
    hint = f"fix: chown -R {uid} {fix_dir} (on the host, for a bind mount)"
    if owner is not None and owner != uid:
        hint += f", or run the container with --user {owner}"
    whose = f" (owned by uid {owner})" if owner is not None else ""
    return StoreNotWritable(f"cannot open {what} {path}: {blocked}{whose} is not writable by uid {uid}", hint)
