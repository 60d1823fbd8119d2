"""SIGKILL at random moments while a real child process keeps publishing the same partition.

After every kill: each published Parquet file is readable and the partition holds a complete
previous version; the next successful run cleans the temp files the killed ones left behind.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import start_server

KILLS = 50


def _publish_forever(job: IngestJob, ctx: RunContext) -> None:
    while True:
        execute(job, ctx)


def _published(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("*.parquet")
                  if not any(part.startswith(".") for part in p.relative_to(data_dir).parts))


@pytest.mark.slow
def test_sigkill_during_writes_never_exposes_a_partial_partition(
    sales_spec: Callable[..., IngestJob], make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    server, url = start_server(records_per_day=6_000, per_page=1_000)
    try:
        quiet = structlog.wrap_logger(structlog.ReturnLogger())
        job = sales_spec(url, sink={"batch_rows": 1000, "row_group_size": 1000})
        ctx = make_ctx(tmp_path, log=quiet)
        execute(job, ctx)
        expected = {p.relative_to(tmp_path): pq.read_table(p) for p in _published(tmp_path)}
        assert len(expected) == 2  # the sales partition and its rejects

        fork = multiprocessing.get_context("fork")
        rng = random.Random(20261105)
        killed_with_temp_files = 0
        for _ in range(KILLS):
            child = fork.Process(target=_publish_forever, args=(job, ctx), daemon=True)
            child.start()
            time.sleep(rng.uniform(0.0, 0.6))
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
            assert child.exitcode == -signal.SIGKILL
            if any(p.name.startswith(".") for p in tmp_path.rglob("*") if p.name != ".scheduler"):
                killed_with_temp_files += 1
            published = _published(tmp_path)
            assert [p.relative_to(tmp_path) for p in published] == sorted(expected)
            for path in published:
                table: pa.Table = pq.read_table(path)
                assert table.equals(expected[path.relative_to(tmp_path)]), f"{path} changed or is partial"
        assert killed_with_temp_files > 0  # some kills did land mid-write

        execute(job, make_ctx(tmp_path, log=quiet))  # the next run cleans what the killed ones left
        assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") and p.name != ".scheduler"]
    finally:
        server.shutdown()
        server.server_close()
