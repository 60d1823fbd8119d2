"""Cross-batch key sets: a row is first seen once per key, whatever the batch sizes and order."""

from __future__ import annotations

import numpy as np

from scheduler.kinds.ingest.keys import KeySet


def test_first_seen_marks_each_key_once_across_batches() -> None:
    rng = np.random.default_rng(7)
    keys, seen = KeySet(), set()
    for size in [0, 1, 5, 400, 3, 1000, 0, 250] * 20:
        probe = rng.integers(0, 5_000, size, dtype=np.uint64)
        expected = np.zeros(size, dtype=bool)
        for i, key in enumerate(probe.tolist()):  # the plain rule, row by row
            if key not in seen:
                seen.add(key)
                expected[i] = True
        assert keys.first_seen(probe).tolist() == expected.tolist()
        assert len(keys) == len(seen)
    assert keys.contains(np.array(sorted(seen), dtype=np.uint64)).all()
    assert not keys.contains(np.array([5_000, 2**63], dtype=np.uint64)).any()
