"""Result files: where a worker child leaves ``{"metrics": ..., "error": ...}`` for its runner.

A runner (the daemon, ``run-job``, ``backfill``) creates ``<data>/.scheduler/tmp/run-<run id>-
<pid>-<host>-<random>.json`` before starting a worker, and removes it once read.  A runner that
is SIGKILLed (``docker kill``, the OOM killer) removes nothing, so :func:`sweep` runs when a
runner starts and removes the files whose owner is gone.

The pid and host name in the file name are the runner's.  Pids mean something only within one
pid namespace, and containers sharing the data volume have a namespace and a host name each, so
a file is stale when:

- its run's record is not ``running`` (every hosts' runners share the store in the data dir), or
- it is this host's and its pid is gone, or is the sweeping process itself (an earlier process
  of the same pid, like PID 1 of a restarted container: a runner sweeps before it creates any);
- a name without pid and host (written before they were recorded) goes by its run's record alone.

The worker writes ``<name>.tmp`` and renames it over the file; a ``.tmp`` goes with its file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from scheduler.process import host_tag, pid_alive

_NAME = re.compile(r"^run-(\d+)-(?:(\d+)-([A-Za-z0-9_]+)-)?[A-Za-z0-9_]{8}\.json(?:\.tmp)?$")


def result_dir(data_dir: Path) -> Path:
    return data_dir / ".scheduler" / "tmp"


def create(data_dir: Path, run_id: int) -> Path:
    """A new, empty result file for ``run_id`` owned by this process."""
    directory = result_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    import tempfile  # imported on use: a command job's run-job never creates one

    fd, name = tempfile.mkstemp(prefix=f"run-{run_id}-{os.getpid()}-{host_tag()}-", suffix=".json", dir=directory)
    os.close(fd)
    return Path(name)


def is_stale(name: str, running: Callable[[int], bool]) -> bool:
    """Whether the result file called ``name`` has no live owner; False for names not ours.

    ``running(run_id)`` says whether the store records that run as ``running``.
    """
    match = _NAME.match(name)
    if match is None:
        return False
    run_id, pid, host = int(match[1]), match[2], match[3]
    if pid is not None and host == host_tag():
        if int(pid) == os.getpid() or not pid_alive(int(pid)):
            return True
    return not running(run_id)


def sweep(data_dir: Path, running: Callable[[int], bool]) -> list[Path]:
    """Remove stale result files (see the module docstring); returns the paths removed."""
    directory = result_dir(data_dir)
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    removed = []
    for path in entries:
        if is_stale(path.name, running):
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # its owner finished meanwhile
            removed.append(path)
    return removed
