"""Compact key sets for cross-batch dedupe, ``unique`` checks and ``merge`` publishing.

Keys are stored as sorted 64-bit digests, 8 bytes per key instead of a Python string object and
set slot (~90 bytes), so memory grows with the number of distinct keys at a few bytes each and
never with the raw data.  A key's digest is computed from its text (what pandas' ``astype("str")``
makes of it) with a vectorised hash over Arrow's string buffers; two distinct keys share a digest
with probability about n^2 / 2^65 (below 3e-6 for 10 million keys in one run).

Invariant: every digest array stays sorted and unique, so membership is a binary search (one per
run of a :class:`KeySet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scheduler.kinds.ingest.columns import text_buffers

_SEED = np.uint64(0x243F6A8885A308D3)
_NULL = np.uint64(0x13198A2E03707344)  # the digest of a missing key part
_COMBINE = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_BYTE = np.arange(8)


def digests(keys: pd.DataFrame | pa.Table, columns: Sequence[str]) -> np.ndarray:
    """One uint64 per row for the key ``columns`` of a frame or an Arrow table; a key hashes
    alike in any batch and either form (its text is what pandas' ``astype("str")`` gives)."""
    out: np.ndarray | None = None
    with np.errstate(over="ignore"):
        for column in columns:
            values = keys.column(column) if isinstance(keys, pa.Table) else keys[column]
            part = text_digests(key_text(values))
            out = part if out is None else _mix(out * _COMBINE + part)
    return out if out is not None else np.zeros(len(keys), dtype=np.uint64)


def key_text(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Key values as Arrow strings: the text ``astype("str")`` gives them (null where missing)."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
            return _one_chunk(pa.array(values.array))
        if pd.api.types.is_integer_dtype(values.dtype):
            return _one_chunk(pc.cast(pa.array(values.array), pa.string()))
        return _one_chunk(pa.array(values.astype("str").array))
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return _one_chunk(values)
    if pa.types.is_integer(values.type):
        return _one_chunk(pc.cast(values, pa.string()))
    return key_text(values.to_pandas())


def _one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    h = (h ^ (h >> _S30)) * _M1
    h = (h ^ (h >> _S27)) * _M2
    out: np.ndarray = h ^ (h >> _S31)
    return out


def text_digests(text: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string's UTF-8 bytes (and length), null as a constant of its own:
    eight bytes at a time, each word folded in through :func:`_mix`."""
    n = len(text)
    offsets, data = text_buffers(text)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if n and lengths.min() == lengths.max():  # keys of one length (IDs mostly are): rows of a matrix
        h = _equal_lengths(data[offsets[0]:offsets[-1]], n, int(lengths[0]))
        if text.null_count:
            h[np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = _NULL
        return h
    data = np.concatenate([data[: offsets[-1] if n else 0], np.zeros(8, dtype=np.uint8)])
    with np.errstate(over="ignore"):
        h = _mix(lengths.astype(np.uint64) ^ _SEED)
        for word in range(-(-int(lengths.max()) // 8) if n else 0):
            at = word * 8 + _BYTE
            chunk = data[np.minimum(starts[:, None] + at, len(data) - 1)]
            chunk[at >= lengths[:, None]] = 0
            # only a key's own words: a shorter key's digest must not depend on a longer one beside it
            h = np.where(lengths > word * 8, _mix(h ^ chunk.view("<u8")[:, 0]), h)
    if text.null_count:
        h[np.asarray(text.is_null().to_numpy(zero_copy_only=False), dtype=bool)] = _NULL
    return h


def _equal_lengths(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """:func:`text_digests` of ``n`` keys of ``width`` bytes each, back to back in ``data``: the
    same digests, the words read as the columns of a zero-padded matrix instead of gathered."""
    words = -(-width // 8)
    block = np.zeros((n, words * 8), dtype=np.uint8)
    block[:, :width] = data.reshape(n, width)
    columns = block.view("<u8")
    with np.errstate(over="ignore"):
        h = _mix(np.full(n, width, dtype=np.uint64) ^ _SEED)
        for word in range(words):
            h = _mix(h ^ columns[:, word])
    return h


_FILTER_BITS = 25  # a 4 MB bit filter: at a million keys about 3 % of new keys need a search
_FILTER_FROM = 50_000  # keys held before a set gets its filter
_FILTER_SHIFT = np.uint64(64 - _FILTER_BITS)
_SEVEN = np.uint64(7)
_ONE = np.uint8(1)


def _filter_slot(digest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte and bit of each digest's slot in a :class:`KeySet`'s filter (its top bits)."""
    top = digest >> _FILTER_SHIFT
    return (top >> np.uint64(3)).astype(np.int64), np.left_shift(_ONE, (top & _SEVEN).astype(np.uint8))


def _set_filter(seen: np.ndarray, ascending: np.ndarray) -> None:
    """Set the filter bits of sorted digests: digests sharing a filter byte are neighbours, so each
    byte is updated once with the bits of its run (``bitwise_or.at`` costs several times more)."""
    byte, bit = _filter_slot(ascending)
    starts = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
    seen[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)


def _find(sorted_digests: np.ndarray, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``probe`` in ``sorted_digests`` and whether each is present."""
    pos = np.searchsorted(sorted_digests, probe)
    inside = pos < len(sorted_digests)
    found = np.zeros(len(probe), dtype=bool)
    found[inside] = sorted_digests[pos[inside]] == probe[inside]
    return pos, found


class KeySet:
    """Digests of keys seen so far, in sorted runs whose sizes at least double from newest to oldest.

    Adding a batch appends a run and merges it with its neighbours only while they are no more
    than twice its size, so each digest is merged O(log n) times over a run (one sorted array
    rebuilt per batch costs O(n) per batch, O(n^2) in all) and a lookup is one binary search per
    run (at most log2(n) runs), made only for keys whose bit in a filter of the digests' top bits
    is set (from 50,000 keys on).  Memory: 8 bytes per distinct key, the 4 MB filter of a large
    set, and during a merge a copy of the runs being merged.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # disjoint, each sorted and unique; oldest and largest first
        self._size = 0
        # from _FILTER_FROM keys on, one bit per value of a digest's top bits, set for every digest
        # held: most new keys find theirs clear and skip the binary searches, whose cache misses
        # dominate in a large set (a small set, e.g. one per partition, has no filter)
        self._seen: np.ndarray | None = None

    def __len__(self) -> int:
        return self._size

    def contains(self, probe: np.ndarray) -> np.ndarray:
        if self._seen is None:
            found: np.ndarray = np.ones(len(probe), dtype=bool)
        else:
            byte, bit = _filter_slot(probe)
            found = (self._seen[byte] & bit) != 0  # maybe held: search the runs for these only
        candidates = np.flatnonzero(found)
        if len(candidates):
            held = np.zeros(len(candidates), dtype=bool)
            subset = probe[candidates]
            for run in self._runs:
                held |= _find(run, subset)[1]
            found[candidates] = held
        return found

    def add(self, new: np.ndarray) -> None:
        """Add digests (duplicates and known ones are ignored)."""
        fresh = np.unique(new)
        if len(fresh) and self._runs:
            fresh = fresh[~self.contains(fresh)]
        self._add_new(fresh)

    def first_seen(self, probe: np.ndarray) -> np.ndarray:
        """Mask of rows whose key is new (neither known nor earlier in ``probe``), then remember them."""
        ordered = np.sort(probe)
        if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
            # the distinct digests, sorted: the binary searches then walk each run in order (cache friendly)
            distinct, first_index = np.unique(probe, return_index=True)
            new = ~self.contains(distinct)
            fresh = np.zeros(len(probe), dtype=bool)
            fresh[first_index[new]] = True
            self._add_new(distinct[new])
            return fresh
        # distinct already (the usual batch, deduplicated by its own step): no first sighting to
        # find, and the filter leaves few binary searches, so their order matters little
        fresh = ~self.contains(probe)
        self._add_new(ordered if fresh.all() else np.sort(probe[fresh]))
        return fresh

    def _add_new(self, fresh: np.ndarray) -> None:
        """Add digests known to be distinct and absent, in ascending order."""
        if not len(fresh):
            return
        self._size += len(fresh)
        if self._seen is None and self._size >= _FILTER_FROM:
            self._seen = np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8)
            for run in self._runs:
                _set_filter(self._seen, run)
        if self._seen is not None:
            _set_filter(self._seen, fresh)
        runs = self._runs
        runs.append(fresh)
        while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
            last = runs.pop()
            merged = np.concatenate([runs[-1], last])
            merged.sort(kind="stable")  # two sorted, disjoint runs: a linear merge
            runs[-1] = merged


class WinnerIndex:
    """For ``keep: last`` or ``by``: the winning (value, batch) per key across batches.

    ``offer`` returns which rows of a batch must be written (new keys and rows beating the
    current winner); keys whose earlier written row lost are collected in ``conflicts`` so the
    sink can drop the superseded rows in a final pass using :meth:`winner_batch`.
    """

    def __init__(self, keep: str, by_values: bool) -> None:
        self._keep, self._by = keep, by_values
        self._digests = np.empty(0, dtype=np.uint64)
        self._batches = np.empty(0, dtype=np.int32)
        self._values: np.ndarray = np.empty(0, dtype=object)
        self.conflicts: set[int] = set()

    def __len__(self) -> int:
        return len(self._digests)

    def _beats(self, new: Any, old: Any) -> bool:
        if not self._by:
            return self._keep == "last"
        if pd.isna(new):
            return False
        if pd.isna(old):
            return True
        return bool(new > old) if self._keep == "last" else bool(new < old)

    def offer(self, probe: np.ndarray, values: np.ndarray, batch: int) -> np.ndarray:
        pos, found = _find(self._digests, probe)
        write = ~found
        for i in np.flatnonzero(found):  # cross-batch duplicates are rare: a Python loop is fine
            j = pos[i]
            if self._beats(values[i], self._values[j]):
                self._values[j], self._batches[j] = values[i], batch
                self.conflicts.add(int(probe[i]))
                write[i] = True
        if (~found).any():
            digests_all = np.concatenate([self._digests, probe[~found]])
            order = np.argsort(digests_all, kind="stable")
            self._digests = digests_all[order]
            self._batches = np.concatenate([self._batches, np.full((~found).sum(), batch, dtype=np.int32)])[order]
            self._values = np.concatenate([self._values, np.asarray(values, dtype=object)[~found]])[order]
        return write

    def winner_batch(self, probe: np.ndarray) -> np.ndarray:
        """Batch number of the winning row for each digest (-1 if unknown)."""
        pos, found = _find(self._digests, probe)
        out = np.full(len(probe), -1, dtype=np.int64)
        out[found] = self._batches[pos[found]]
        return out
