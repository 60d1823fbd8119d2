"""Separate processes acting as scheduler replicas, for the race tests.

``python store_worker.py BACKEND TARGET ACTION``: opens the store (``migrate`` only connects),
prints ``ready``, waits for a ``go`` line on stdin, acts, prints the result as JSON, then stays
alive until stdin closes, so a run it claimed keeps a live owner while the others race.
:func:`run_workers` starts several and releases them together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

SLOT = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def run_workers(backend: str, target: str, action: str, count: int) -> list[Any]:
    """Start ``count`` worker processes, release them together once all are ready, return their
    results (in start order)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    procs = [subprocess.Popen([sys.executable, str(HERE / "store_worker.py"), backend, target, action],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(count)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [json.loads(proc.stdout.readline()) for proc in procs if proc.stdout is not None]
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(30)


def main(backend: str, target: str, action: str) -> None:
    store: Any = None
    conn: Any = None
    if action == "migrate":
        import psycopg

        conn = psycopg.connect(target, autocommit=True)
    elif backend == "postgres":
        from scheduler.stores.postgres import PostgresStore

        store = PostgresStore.open(target)
    else:
        from scheduler.state import SQLiteStore

        store = SQLiteStore.open(Path(target))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    if action == "migrate":
        from scheduler.stores.migrations import migrate

        result: Any = migrate(conn)
    else:
        result = store.start_run("race", SLOT, date(2026, 2, 28), "schedule")
    print(json.dumps(result), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(*sys.argv[1:4])
