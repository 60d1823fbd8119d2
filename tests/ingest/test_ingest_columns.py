"""Records to Arrow columns: the C-level path gives what per-field inference gives, and reject records
built straight from the columns read exactly as those built from the pandas view."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from scheduler.kinds.ingest import columns
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
    return fast.column("record").to_pylist(), list(slow["record"])


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


def _view(batch: Batch) -> list[tuple[str, Any, Any]]:
    return [(name, col.dtype, col.data.to_pylist() if isinstance(col.data, pa.Array) else col.data)
            for name, col in batch.columns.items()]


PAGES: dict[str, list[dict[str, Any]]] = {
    "uniform": [{"id": f"o{i}", "n": i, "c": {"e": f"E{i}", "s": None if i % 3 else "x", "d": {"k": i}}}
                for i in range(70)],
    "child mixes types": [{"id": "a", "c": {"q": 3 if i % 2 else "3"}} for i in range(70)],
    "child beyond int64": [{"c": {"q": 2**64 if i == 5 else i}} for i in range(70)],
    "child beyond 2**53 with nulls": [{"c": {"q": None if i == 0 else 2**60 + i}} for i in range(70)],
    "a null object": [{"c": None if i == 9 else {"q": i}} for i in range(70)],
    "keys differ": [{"c": {"q": i} if i % 2 else {"r": i}} for i in range(70)],
    "an extra key": [{"id": i, **({"x": 1} if i == 69 else {})} for i in range(70)],
    "a missing key": [{"id": i, "x": 1} if i else {"id": i} for i in range(70)],
    "empty objects": [{"c": {}} for _ in range(70)],
    "not objects": [{"c": "text" if i == 3 else {"q": i}} for i in range(70)],
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_columns_are_what_per_field_inference_gives(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C-level path for records (and nested objects) of one key set builds the same columns
    as reading each field through ``r.get`` and one struct inference per nested field."""
    records = PAGES[page]
    fast = _view(from_records(records, "_"))
    monkeypatch.setattr(columns, "_same_keys", lambda objects: None)
    assert fast == _view(from_records(records, "_"))
