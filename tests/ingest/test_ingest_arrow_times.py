"""The timestamp kernel's exactness check: which texts the strptime kernel reads as pandas does."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scheduler.kinds.ingest.arrow_steps import _ISO_FORMAT, _iso_utc_exact

TEXTS = [
    "2026-11-05T01:02:03Z",  # plain
    "2026-02-30T10:00:00Z",  # strptime rolls the day over
    "2026-11-05T10:00:60Z",  # ... and the second
    "1899-12-31T23:59:59Z",  # outside the years the kernel is trusted with
    "2200-01-01T00:00:00Z",
    "2026-11-05T01:02:03+0",  # 20 characters, not the layout
    "2026-11-05 01:02:03Z",
    "2026-1a-05T01:02:03Z",
    "2026-11-05T01:02:03",
    "2026-11-05T01:02:03.5Z",
    "",
    None,
    "2024-02-29T12:00:00Z",  # a leap day
    "2025-02-29T12:00:00Z",
]


def _expected(text: str | None) -> bool:
    if text is None or len(text) != 20 or not text.endswith("Z") or text[:2] not in ("19", "20", "21"):
        return False
    try:
        return pd.Timestamp(text).strftime("%Y-%m-%dT%H:%M:%SZ") == text
    except ValueError:
        return False


@pytest.mark.parametrize("start", [0, 3])
def test_only_texts_read_exactly_pass(start: int) -> None:
    array = pa.array(["x"] * start + TEXTS, type=pa.string()).slice(start)  # a slice: offsets not at zero
    parsed = pc.strptime(array, format=_ISO_FORMAT, unit="s", error_is_null=True)
    got = _iso_utc_exact(array, parsed).tolist()
    assert got == [_expected(t) for t in TEXTS]
