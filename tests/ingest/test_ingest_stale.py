"""Stale temp cleanup: this host's temp paths go by pid, another host's (container's) by age."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from pytest_httpserver import HTTPServer

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.sink import STALE_AFTER, DatasetWriter, clean_stale, host_tag
from scheduler.kinds.ingest.spec import IngestJob

DEAD = 999_999_999  # no such pid here; in another pid namespace it may well be a live writer
HOUR = 3600.0
SCHEMA = pa.schema([("id", pa.int64())])


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _dataset(tmp_path: Path) -> Path:
    dataset = tmp_path / "items"
    (dataset / "date=2026-11-05").mkdir(parents=True)
    return dataset


def test_temp_names_carry_this_host_and_pid(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, "items", SCHEMA, "replace_partition")
    writer.write("2026-11-05", pa.table({"id": [1]}, schema=SCHEMA), 0)
    (temp,) = [p.name for p in (tmp_path / "items").iterdir()]
    assert temp.startswith(f".date=2026-11-05.tmp-{host_tag()}-{os.getpid()}-")
    writer.abort()
    assert not list((tmp_path / "items").iterdir())


def test_this_hosts_temp_paths_are_stale_when_their_pid_is_gone(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    host = host_tag()
    dead_file = dataset / "date=2026-11-05" / f".part.tmp-{host}-{DEAD}-deadbeef"
    dead_rewrite = dataset / "date=2026-11-05" / f".part.tmp-{host}-{DEAD}-deadbeef.2"
    dead_dir = dataset / f".date=2026-11-06.tmp-{host}-{DEAD}-deadbeef"
    old_format = dataset / "date=2026-11-05" / f".part.tmp-{DEAD}-0badf00d"  # written before host names
    live_file = dataset / "date=2026-11-05" / f".part.tmp-{host}-{os.getppid()}-cafef00d"
    live_dir = dataset / f".date=2026-11-07.tmp-{host}-{os.getppid()}-cafef00d"
    for path in (dead_file, dead_rewrite, old_format, live_file):
        path.write_bytes(b"half")
    dead_dir.mkdir()
    live_dir.mkdir()
    _age(live_file, 30 * 24 * HOUR)  # age does not matter for this host: the writer is alive
    assert clean_stale(dataset) == 4
    assert not dead_file.exists() and not dead_rewrite.exists() and not dead_dir.exists() and not old_format.exists()
    assert live_file.exists() and live_dir.exists()


def test_another_hosts_temp_paths_are_stale_only_when_idle_long_enough(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    other = "compose_run_1f2e3d" if host_tag() != "compose_run_1f2e3d" else "daemon_host"
    fresh_file = dataset / "date=2026-11-05" / f".part.tmp-{other}-{DEAD}-00000001"
    idle_file = dataset / "date=2026-11-05" / f".part.tmp-{other}-{DEAD}-00000002"
    busy_dir = dataset / f".date=2026-11-06.tmp-{other}-{DEAD}-00000003"  # old directory, file written now
    idle_dir = dataset / f".date=2026-11-07.tmp-{other}-{DEAD}-00000004"
    for path in (fresh_file, idle_file):
        path.write_bytes(b"half")
    for path in (busy_dir, idle_dir):
        path.mkdir()
        (path / "part-00000.parquet").write_bytes(b"half")
    _age(fresh_file, STALE_AFTER - HOUR)
    _age(idle_file, STALE_AFTER + HOUR)
    _age(busy_dir, STALE_AFTER + HOUR)
    _age(idle_dir / "part-00000.parquet", STALE_AFTER + HOUR)
    _age(idle_dir, STALE_AFTER + HOUR)

    assert clean_stale(dataset, stale_after=STALE_AFTER + 2 * HOUR) == 0  # a longer source deadline
    assert clean_stale(dataset) == 2
    assert fresh_file.exists() and busy_dir.exists()
    assert not idle_file.exists() and not idle_dir.exists()


def test_a_run_keeps_another_hosts_temp_paths_within_the_source_deadline(
    httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]
) -> None:
    httpserver.expect_request("/items").respond_with_data(json.dumps({"items": [{"id": 1}]}),
                                                          content_type="application/json")

    def job(deadline: str) -> IngestJob:
        return IngestJob.model_validate({
            "kind": "ingest", "sink": {"dataset": "items", "schema": {"id": "int"}},
            "source": {"base_url": httpserver.url_for(""), "path": "/items", "records": "items", "deadline": deadline},
        })

    dataset = _dataset(tmp_path)
    other = "compose_run_1f2e3d" if host_tag() != "compose_run_1f2e3d" else "daemon_host"
    writing = dataset / f".date=2026-11-06.tmp-{other}-{DEAD}-00000001"
    writing.mkdir()
    (writing / "part-00000.parquet").write_bytes(b"half")
    for path in (writing / "part-00000.parquet", writing):
        _age(path, 10 * HOUR)
    execute(job("12h"), make_ctx(tmp_path))  # idle 10 h, but the other run may fetch for 12 h
    assert writing.exists()
    execute(job("1h"), make_ctx(tmp_path))  # idle past 6 h, the floor
    assert not writing.exists()
