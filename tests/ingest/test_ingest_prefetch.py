"""The fetch thread: it runs ahead of the transform side by a bounded number of pages, and its
module loads without pandas, so a fresh worker fetches while pandas imports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from polling import wait_for

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest.pages import ArrowPage
from scheduler.kinds.ingest.prefetch import PREFETCH_PAGES, STARTUP_PAGES, start_fetching
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import start_server


def _holds_at(count: Callable[[], int], bound: int) -> None:
    """The count reaches ``bound`` and goes no further within a second (the thread waits for room)."""
    wait_for(lambda: count() >= bound, what=f"{bound} pages fetched")
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: count() > bound, timeout=1.0, what="a page past the bound")


def test_pages_run_ahead_by_a_bounded_count(sales_spec: Callable[..., IngestJob], tmp_path: Path,
                                            make_ctx: Callable[..., RunContext]) -> None:
    server, url = start_server(records_per_day=100 * 50, per_page=50)
    try:
        spec = sales_spec(url, source={"pagination": {"page_size": 50}})
        prefetch = start_fetching(spec, make_ctx(tmp_path))
        try:
            # until the transform side is up: STARTUP_PAGES queued, one more fetched and held
            _holds_at(lambda: prefetch.pages, STARTUP_PAGES + 1)
            prefetch.consuming()
            taken = [prefetch.get() for _ in range(STARTUP_PAGES)]
            assert all(kind == "page" and isinstance(item, ArrowPage) and item.rows == 50 for kind, item in taken)
            # then at most PREFETCH_PAGES ahead
            _holds_at(lambda: prefetch.pages, STARTUP_PAGES + PREFETCH_PAGES + 1)
            kinds = []
            while not kinds or kinds[-1] == "page":
                kinds.append(prefetch.get()[0])
            assert kinds.count("page") == 100 - STARTUP_PAGES and kinds[-1] == "end"
        finally:
            prefetch.close()
    finally:
        server.shutdown()
        server.server_close()


def test_the_fetch_side_imports_no_pandas() -> None:
    code = ("import sys, scheduler.worker, scheduler.kinds.ingest.prefetch; "
            "print(sorted(m for m in ('pandas', 'scheduler.kinds.ingest.columns') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
