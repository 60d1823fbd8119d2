"""Cross-batch key sets: a row is first seen once per key, whatever the batch sizes and order."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.kinds.ingest import keys as keys_module
from scheduler.kinds.ingest.keys import KeySet


@pytest.mark.parametrize("filter_from", [50_000, 100])  # as shipped (no filter here) and with the filter
@pytest.mark.parametrize("spread", ["small values", "full 64-bit digests"])
@pytest.mark.parametrize("repeats", [True, False])  # keys repeated within a batch, or each once (deduplicated)
def test_first_seen_marks_each_key_once_across_batches(spread: str, filter_from: int, repeats: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "_FILTER_FROM", filter_from)
    rng = np.random.default_rng(7)
    pool = (np.arange(5_000, dtype=np.uint64) if spread == "small values"
            else rng.integers(0, 2**64 - 1, 5_000, dtype=np.uint64, endpoint=True))
    keys, seen = KeySet(), set()
    for size in [0, 1, 5, 400, 3, 1000, 0, 250] * 20:
        probe = pool[rng.integers(0, len(pool), size)] if repeats else rng.choice(pool, size, replace=False)
        expected = np.zeros(size, dtype=bool)
        for i, key in enumerate(probe.tolist()):  # the plain rule, row by row
            if key not in seen:
                seen.add(key)
                expected[i] = True
        assert keys.first_seen(probe).tolist() == expected.tolist()
        assert len(keys) == len(seen)
    assert keys.contains(np.array(sorted(seen), dtype=np.uint64)).all()
    absent = np.array(sorted(set(rng.integers(0, 2**64 - 1, 1_000, dtype=np.uint64, endpoint=True).tolist()) - seen),
                      dtype=np.uint64)
    assert not keys.contains(absent).any()
