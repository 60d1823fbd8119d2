"""State store backends and :func:`open_store`, which opens the one the ``state:`` section names.

* ``backend: sqlite`` (default): :class:`scheduler.state.SQLiteStore` at ``state.path`` or
  ``<data dir>/.scheduler/state.db``;
* ``backend: postgres``: :class:`scheduler.stores.postgres.PostgresStore` at ``state.url``.

Importing this package is cheap: psycopg is imported only when a PostgreSQL store is opened.
Errors opening a store become one-line :class:`StateError` messages with the URL's password masked.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from scheduler.errors import StateError
from scheduler.stores.protocol import StateStore

__all__ = ["StateStore", "mask_url", "open_store", "url_secrets"]

_USERINFO_PASSWORD = re.compile(r"^([a-z][a-z0-9+.\-]*://[^:/@]*:)[^@]*(@)", re.I)


def url_secrets(url: str | None) -> set[str]:
    """The password of a database URL, as written and percent-decoded (both must be masked)."""
    if not url:
        return set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return {password, unquote(password)} - {""} if password else set()


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    return _USERINFO_PASSWORD.sub(r"\1***\2", url)


def open_store(settings: Any, data_dir: Path) -> StateStore:
    """Open the store the ``state:`` section ``settings`` describes (``None``: the default SQLite
    file under ``data_dir``).  Raises :class:`StateError` when it cannot be opened."""
    if settings is not None and settings.backend == "postgres":
        from scheduler.stores.postgres import PostgresStore

        return PostgresStore.open(settings.url)
    from scheduler.state import SQLiteStore

    path = Path(settings.path) if settings is not None and settings.path else data_dir / ".scheduler" / "state.db"
    try:
        return SQLiteStore.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the state store {path}: {exc}") from None
