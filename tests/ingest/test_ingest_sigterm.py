"""SIGTERM while a real worker process is publishing: the run completes and publishes everything.

The child is ``scheduler.worker`` itself (its SIGTERM handler raises ``SystemExit``), with the
rejects' publish slowed down so the signal lands after the rejects are renamed into place and
before the output is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import structlog

from scheduler.config.compiled import spec_json
from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import start_server

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 5)  # the day of the ``make_ctx`` fixture
PART = f"date={DAY.isoformat()}"

# Runs in the child: after the rejects are published, say so and dawdle, then run the worker.
CHILD = """
import sys, time
from pathlib import Path
from scheduler.kinds.ingest import sink

marker = Path(sys.argv[1])
publish = sink.DatasetWriter.publish

def slow_publish(self):
    published = publish(self)
    if self.dir.name.endswith("_rejects"):
        marker.write_text("rejects published")
        time.sleep(3)
    return published

sink.DatasetWriter.publish = slow_publish
from scheduler import worker
sys.exit(worker.main())
"""


def _published(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.parquet")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def test_sigterm_mid_publish_still_publishes_output_and_rejects_together(
    sales_spec: Callable[..., IngestJob], make_ctx: Callable[..., RunContext], tmp_path: Path
) -> None:
    server, url = start_server(records_per_day=3_000, per_page=500)
    try:
        job = sales_spec(url, incremental={"cursor_field": "sold_at"})
        quiet = structlog.wrap_logger(structlog.ReturnLogger())
        reference = execute(job, make_ctx(tmp_path / "reference", log=quiet))
        assert reference["rows_rejected"] > 0 and reference["watermark"]
        expected = {path: pq.read_table(tmp_path / "reference" / path) for path in _published(tmp_path / "reference")}
        assert sorted(expected) == [Path("sales") / PART / "part-00000.parquet",
                                    Path("sales_rejects") / PART / "part-00000.parquet"]

        data, marker, result = tmp_path / "data", tmp_path / "publishing", tmp_path / "result.json"
        start = DAY.isoformat() + "T00:00:00+00:00"
        payload: dict[str, Any] = {
            "kind": "ingest", "job": "daily_sales", "spec": spec_json(job), "run_id": 1, "attempt": 1,
            "slot": DAY.isoformat() + "T02:00:00+00:00", "logical_date": DAY.isoformat(),
            "data_interval_start": start, "data_interval_end": DAY.isoformat() + "T23:59:59+00:00",
            "data_dir": str(data), "params": {}, "watermark": None, "result_path": str(result),
            "log_level": "info", "secrets": [],
        }
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        log_file = tmp_path / "worker.log"
        with log_file.open("wb") as out:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], stdin=subprocess.PIPE,
                                     stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            assert child.stdin is not None
            child.stdin.write(json.dumps(payload).encode())
            child.stdin.close()
            deadline = time.monotonic() + 30
            while not marker.exists():
                assert child.poll() is None, log_file.read_text()
                assert time.monotonic() < deadline, "the child never reached the publish phase"
                time.sleep(0.02)
            # mid-publish: the rejects are in place, the output is not yet
            assert _published(data) == [Path("sales_rejects") / PART / "part-00000.parquet"]
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        logs = log_file.read_text()
        assert child.returncode == 0, logs
        recorded = json.loads(result.read_text())
        assert "error" not in recorded, recorded
        assert recorded["metrics"]["watermark"] == reference["watermark"]
        assert recorded["metrics"]["rows_written"] == reference["rows_written"]
        assert "ingest.stop_deferred" in logs

        assert _published(data) == sorted(expected)
        for path, table in expected.items():
            assert pq.read_table(data / path).equals(table), f"{path} is partial or differs"
        assert not [p for p in data.rglob(".*")], "temp files left behind"
    finally:
        server.shutdown()
        server.server_close()
