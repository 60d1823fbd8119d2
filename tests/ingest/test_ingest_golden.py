"""Golden runs: the published output and rejects of dirty records, pinned row for row and type for type.

The expected tables in ``golden/`` were written by ``python tests/ingest/ingest_golden.py`` with the
pandas transform engine; whatever engine cleans the batches must publish exactly the same schema,
rows (in file order), rejects (reason, step and the record as JSON) and counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_golden import CASES, load, run_case, sales_records

from scheduler.kinds.ingest import prefetch


@pytest.mark.parametrize("in_process", [False, True], ids=["fetch-thread", "fetch-process"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_published_tables_match_the_golden_run(case: str, in_process: bool, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefetch, "may_fork", lambda: in_process)  # the pages cross a pipe, or stay in process
    expected = load(case)
    got = run_case(case, tmp_path, sales_records())
    assert got["counts"] == expected["counts"]
    assert got["output"]["schema"] == expected["output"]["schema"]
    assert got["rejects"]["schema"] == expected["rejects"]["schema"]
    for table in ("rejects", "output"):  # rejects first: their reasons say most when something drifts
        rows, want = got[table]["rows"], expected[table]["rows"]
        # not strict: the first differing row says more than a length mismatch, compared below
        for index, (row, golden_row) in enumerate(zip(rows, want, strict=False)):
            assert row == golden_row, f"{table} row {index} differs"
        assert len(rows) == len(want)
