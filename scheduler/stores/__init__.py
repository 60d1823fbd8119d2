"""State store backends and :func:`open_store`, which opens the one the ``state:`` section names.

* ``backend: sqlite`` (default): :class:`scheduler.state.SQLiteStore` at ``state.path`` or
  ``<data dir>/.scheduler/state.db``;
* ``backend: postgres``: :class:`scheduler.stores.postgres.PostgresStore` at ``state.url``.

Importing this package is cheap: psycopg is imported only when a PostgreSQL store is opened.
Errors opening a store become one-line :class:`StateError` messages with the URL's password masked.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from scheduler.errors import StateError
from scheduler.stores.protocol import StateStore
from scheduler.stores.urls import mask_url, url_secrets

__all__ = ["StateStore", "mask_url", "open_store", "sqlite_path", "url_secrets"]

def sqlite_path(settings: Any, data_dir: Path) -> Path:
    """Where the SQLite store lives: ``state.path``, else ``<data dir>/.scheduler/state.db``."""
    return Path(settings.path) if settings is not None and settings.path else data_dir / ".scheduler" / "state.db"


def open_store(settings: Any, data_dir: Path) -> StateStore:
    """Open the store the ``state:`` section ``settings`` describes (``None``: the default SQLite
    file under ``data_dir``).  Raises :class:`StateError` when it cannot be opened."""
    if settings is not None and settings.backend == "postgres":
        from scheduler.stores.postgres import PostgresStore

        return PostgresStore.open(settings.url)
    from scheduler.state import SQLiteStore

    path = sqlite_path(settings, data_dir)
    try:
        return SQLiteStore.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the state store {path}: {exc}") from None
