"""Fixtures running the state-store suite against every backend.

``store`` is parametrized over ``sqlite`` and ``postgres``; ``backend`` opens more stores on the
same database (another replica).  The PostgreSQL cluster is started once per session; each test
gets a database of its own.  Tests on PostgreSQL are marked ``postgres``: they skip without the
binaries, and a skip fails under ``CI=true`` (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pgcluster
import pytest

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    with pgcluster.running() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: pgcluster.Cluster) -> Iterator[str]:
    """The URL of a fresh, empty database of the private cluster."""
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


class Backend:
    """Opens stores of one backend on one database; closes them all at teardown."""

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target = name, target
        self.opened: list[Any] = []

    def open(self) -> Any:
        if self.name == "postgres":
            from scheduler.stores.postgres import PostgresStore

            store: Any = PostgresStore.open(self.target)
        else:
            from scheduler.state import SQLiteStore

            store = SQLiteStore.open(self.target)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    target = request.getfixturevalue("pg_url") if request.param == "postgres" else tmp_path / "state.db"
    opened = Backend(request.param, target)
    yield opened
    opened.close_all()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.open()


@pytest.fixture
def open_store(backend: Backend) -> Callable[[], Any]:
    """Another store on the same database: another thread's or replica's connection."""
    return backend.open
