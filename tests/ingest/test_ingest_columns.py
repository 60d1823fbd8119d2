"""Reject records built straight from Arrow columns read exactly as those built from the pandas view."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from scheduler.kinds.ingest.columns import NULLABLE_INT, UTC_US, Batch, Column, from_records
from scheduler.kinds.ingest.results import reject_frame, reject_rows

RECORDS: list[dict[str, Any]] = [
    {"id": "a", "n": 1, "n_null": 7, "x": 1.5, "flag": True, "flag_null": True, "mixed": 3, "tags": ["t"],
     "nested": {"k": 1}, "nothing": None, "big": 2**60},
    {"id": None, "n": 2, "n_null": None, "x": -0.0, "flag": False, "flag_null": None, "mixed": "3", "tags": [],
     "nested": {"k": None}, "nothing": None, "big": None},
    {"id": "ç\"\\", "n": -3, "x": 1e300, "flag": True, "flag_null": False, "mixed": None, "tags": None,
     "nested": None, "nothing": None, "big": 5, "late": "only here"},
]


def _both(batch: Batch, positions: np.ndarray) -> tuple[list[str], list[str]]:
    rows = batch.plain_rows(positions)
    assert rows is not None
    fast = reject_rows(list(batch.columns), rows, "s", ["r"] * len(rows))
    slow = reject_frame(batch.frame(positions), slice(None), "s", "r")
    return list(fast["record"]), list(slow["record"])


def test_plain_rows_match_the_pandas_rows_for_each_record_dtype() -> None:
    batch = from_records(RECORDS, "_")
    batch.columns["ints"] = Column(pa.array([1, None, 3], type=pa.int64()), NULLABLE_INT)
    for positions in (np.arange(3), np.array([1]), np.array([0, 2])):
        fast, slow = _both(batch, positions)
        assert fast == slow
    assert len(_both(batch, np.arange(3))[0]) == 3


def test_plain_rows_decline_dtypes_left_to_pandas() -> None:
    batch = from_records([{"t": "2026-11-05T08:00:00Z"}])
    batch.columns["t"] = Column(pa.array([0], type=pa.timestamp("us", tz="UTC")), UTC_US)
    assert batch.plain_rows(np.array([0])) is None
