"""A batch of records as Arrow columns, each tagged with the pandas dtype it has for hooks and rejects.

The transform steps run on Arrow arrays with ``pyarrow.compute`` kernels; pandas is reached only
where a DataFrame is asked for (a hook, a step the Arrow kernels leave to pandas, a reject
record).  Invariants:

- ``Column.dtype`` is the dtype the column has as a pandas Series (:meth:`Batch.series`): the
  dtype ``records_to_frame`` gives a whole batch (an int64 column with nulls is float64, a bool
  one with nulls is object), or the dtype a step produced.  A subset of rows converts to that
  same dtype, so a reject record reads exactly as the whole batch would render it.
- ``Batch.index`` holds each row's position in the batch as it arrived; the pandas view carries
  it as its index, as row filtering in pandas keeps the original labels.
- A column of mixed JSON types (``3`` beside ``"3"``) cannot be one Arrow array: it stays a list
  of Python values (dtype object) for the steps that sort such values out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scheduler.errors import JobFailed

OBJECT = np.dtype("O")
INT64 = np.dtype("int64")
FLOAT64 = np.dtype("float64")
BOOL = np.dtype("bool")
STR = pd.StringDtype(na_value=np.nan)  # pandas' default string dtype, backed by Arrow
NULLABLE_INT = pd.Int64Dtype()
NULLABLE_FLOAT = pd.Float64Dtype()
NULLABLE_BOOL = pd.BooleanDtype()
UTC_US = pd.DatetimeTZDtype("us", "UTC")
_EXACT = 2**53
_MASKED = {NULLABLE_INT: pa.int64(), NULLABLE_FLOAT: pa.float64(), NULLABLE_BOOL: pa.bool_()}


class RecordsError(JobFailed):
    """The page records are not JSON objects."""


def text_buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's raw parts, without copying: the ``len + 1`` offsets of its rows (int64,
    the array's own slice) and its UTF-8 data bytes (row ``i`` is ``data[offsets[i]:offsets[i + 1]]``)."""
    n, buffers = len(text), text.buffers()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=width)[text.offset:text.offset + n + 1].astype(np.int64, copy=False)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, dtype=np.uint8)
    return offsets, data


class Column:
    """One column: an Arrow array (or a list of mixed Python values) and its pandas dtype.

    ``parts``, when set on a list column of integers and strings, holds the same values as two
    Arrow arrays (``int64`` and ``string``, each null where the other holds the row's value), for
    kernels that read them without the Python values; :meth:`mixed` builds such a column, whose
    list of values is made on first use of :attr:`data`."""

    __slots__ = ("_data", "dtype", "parts")

    def __init__(self, data: pa.Array | list[Any], dtype: Any, parts: tuple[pa.Array, pa.Array] | None = None) -> None:
        self._data: pa.Array | list[Any] | None = data
        self.dtype = dtype
        self.parts = parts

    @classmethod
    def mixed(cls, numbers: pa.Array, texts: pa.Array) -> Column:
        """An object column of integers (``numbers``) and strings (``texts``), one of them null per row."""
        col = cls([], OBJECT, (numbers, texts))
        col._data = None
        return col

    @property
    def data(self) -> pa.Array | list[Any]:
        if self._data is None:
            assert self.parts is not None
            numbers, texts = self.parts
            self._data = [t if t is not None else v
                          for v, t in zip(numbers.to_pylist(), texts.to_pylist(), strict=True)]
        return self._data

    @property
    def is_list(self) -> bool:
        """Whether the values are Python objects (a list), without building a mixed column's list."""
        return self._data is None or isinstance(self._data, list)

    def values_at(self, positions: np.ndarray) -> list[Any]:
        """The Python values at ``positions`` of a list column (a mixed one's list is not built)."""
        if self._data is None and self.parts is not None:
            indices = pa.array(positions, type=pa.int64())
            numbers, texts = (part.take(indices).to_pylist() for part in self.parts)
            return [t if t is not None else v for v, t in zip(numbers, texts, strict=True)]
        data = self.data
        assert isinstance(data, list)
        return [data[i] for i in positions]

    def __repr__(self) -> str:
        return f"Column(dtype={self.dtype!r}, data={self.data!r})"

    @property
    def arrow(self) -> pa.Array | None:
        return self.data if isinstance(self.data, pa.Array) else None


@dataclass
class Batch:
    """Columns in order, all of one length, and each row's original position (:attr:`index`)."""

    columns: dict[str, Column]
    index: np.ndarray
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.index)

    def take(self, positions: np.ndarray) -> Batch:
        """The rows at ``positions`` (sorted, within range)."""
        indices = pa.array(positions, type=pa.int64())
        columns = {n: Column(c.data.take(indices), c.dtype) if c.parts is None and isinstance(c.data, pa.Array)
                   else Column.mixed(*(part.take(indices) for part in c.parts)) if c.parts is not None
                   else Column(c.values_at(positions), c.dtype) for n, c in self.columns.items()}
        return Batch(columns, self.index[positions])

    def keep(self, mask: np.ndarray) -> Batch:
        """The rows where ``mask`` (a numpy bool array) is true; the batch itself when all are."""
        if mask.all():
            return self
        selector = pa.array(mask, type=pa.bool_())
        columns = {n: Column.mixed(*(part.filter(selector) for part in c.parts)) if c.parts is not None
                   else Column(c.data.filter(selector), c.dtype) if isinstance(c.data, pa.Array)
                   else Column(list(compress(c.data, mask)), c.dtype) for n, c in self.columns.items()}
        return Batch(columns, self.index[mask])

    def pandas_index(self, positions: np.ndarray | None = None) -> pd.Index:
        labels = self.index if positions is None else self.index[positions]
        if len(labels) and labels[0] == 0 and labels[-1] == len(labels) - 1:
            return pd.RangeIndex(len(labels))  # nothing was dropped: the index a fresh frame has
        index: pd.Index = pd.Index(labels, dtype="int64")
        return index

    def series(self, name: str, positions: np.ndarray | None = None) -> pd.Series:
        """Column ``name`` (optionally only the rows at ``positions``) as the pandas engine holds it."""
        return to_series(self.columns[name], self.pandas_index(positions), positions, name)

    def plain_rows(self, positions: np.ndarray) -> list[tuple[Any, ...]] | None:
        """The rows at ``positions`` as tuples of the Python values a pandas row of :meth:`frame`
        holds (null as None or NaN, as there), without building the frame; None when a column's
        dtype is not one whose values are known to match (the caller then uses :meth:`frame`)."""
        values = [_plain_values(col, positions) for col in self.columns.values()]
        if any(v is None for v in values):
            return None
        return list(zip(*values, strict=True)) if values else [() for _ in positions]

    def key_table(self, names: list[str]) -> pa.Table | None:
        """Columns ``names`` as an Arrow table for key digests, when each is text or integers held
        as Arrow (their text is then the text of the pandas view); None otherwise."""
        cols = [self.columns[n] for n in names]
        if not all(isinstance(c.data, pa.Array) and c.dtype in (STR, INT64, NULLABLE_INT) for c in cols):
            return None
        return pa.table([c.data for c in cols], names=names)

    def frame(self, positions: np.ndarray | None = None, names: list[str] | None = None) -> pd.DataFrame:
        """The batch (or some rows, some columns) as a DataFrame, columns in order, original index."""
        index = self.pandas_index(positions)
        names = list(self.columns) if names is None else names
        # columns whose dtype is what Arrow's own conversion gives go over in one call
        plain = [n for n in names if _converts_plainly(self.columns[n])]
        if len(plain) < 2:
            plain = []
        series: dict[str, pd.Series] = {}
        if plain:
            taken = pa.array(positions, type=pa.int64()) if positions is not None else None
            arrays: list[pa.Array] = [self.columns[n].data for n in plain]  # Arrow, as _converts_plainly says
            table = pa.table([a.take(taken) if taken is not None else a for a in arrays], names=plain)
            converted = table.to_pandas(types_mapper=_PLAIN_TYPES.get, split_blocks=True)
            for name in plain:
                column = converted[name]
                column.index = index
                series[name] = column
        for name in names:
            if name not in series:
                series[name] = to_series(self.columns[name], index, positions, name)
        # the Series are new, so the frame may hold them as they are (pandas copies on write)
        return pd.DataFrame({n: series[n] for n in names}, index=index, columns=names, copy=False)


_PLAIN_TYPES = {pa.string(): STR}


def _converts_plainly(col: Column) -> bool:
    """Whether Arrow's conversion of the whole table gives this column its dtype as it is."""
    data, dtype = col.data, col.dtype
    if not isinstance(data, pa.Array):
        return False
    kind = data.type
    return bool((dtype == STR and pa.types.is_string(kind))
                or (dtype == INT64 and pa.types.is_int64(kind) and not data.null_count)
                or (dtype == FLOAT64 and pa.types.is_float64(kind))
                or (dtype == BOOL and pa.types.is_boolean(kind) and not data.null_count)
                or (dtype == UTC_US and kind == pa.timestamp("us", tz="UTC")))


_FROM_FRAME = (INT64, FLOAT64, BOOL, STR, NULLABLE_INT, NULLABLE_FLOAT, NULLABLE_BOOL, UTC_US)


def from_frame(frame: pd.DataFrame) -> Batch | None:
    """The batch whose pandas view (:meth:`Batch.frame`) is ``frame``, or None when that is not
    certain: columns of other dtypes, repeated or non-text names, an index that is not increasing
    integers (the row positions a filtered batch keeps)."""
    names = list(frame.columns)
    if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        return None
    index = frame.index
    if isinstance(index, pd.RangeIndex):
        if index.step != 1:
            return None
    elif not (index.dtype == INT64 and index.is_monotonic_increasing and index.is_unique):
        return None
    columns: dict[str, Column] = {}
    for name in names:
        series = frame[name]
        dtype = series.dtype
        if dtype == OBJECT:
            columns[name] = Column(series.tolist(), OBJECT)
        elif dtype in _FROM_FRAME:
            array = pa.array(series.array, from_pandas=dtype == FLOAT64)
            if pa.types.is_large_string(array.type):
                array = array.cast(pa.string())
            columns[name] = Column(array, dtype)
        else:
            return None
    return Batch(columns, np.asarray(index, dtype=np.int64))


def to_series(col: Column, index: pd.Index, positions: np.ndarray | None, name: str | None = None) -> pd.Series:
    """``col`` (or its rows at ``positions``) as a Series of ``col.dtype``; Arrow buffers are reused where
    pandas can."""
    if col.is_list:
        values = col.data if positions is None else col.values_at(positions)
        return pd.Series(values, dtype=OBJECT, index=index, name=name)
    data, dtype = col.data, col.dtype
    assert isinstance(data, pa.Array)
    if positions is not None:
        data = data.take(pa.array(positions, type=pa.int64()))
    if dtype == OBJECT:
        return pd.Series(data.to_pylist() if not pa.types.is_null(data.type) else [None] * len(data), dtype=OBJECT,
                         index=index, name=name)
    out: pd.Series
    if dtype in _MASKED:
        out = data.to_pandas(types_mapper={_MASKED[dtype]: dtype}.get)
    else:
        out = data.to_pandas()
        if out.dtype != dtype:
            out = out.astype(dtype)
    out.index, out.name = index, name
    return out


def _plain_values(col: Column, positions: np.ndarray) -> list[Any] | None:
    """Column values at ``positions`` as a row of a pandas frame holds them, up to what a reject
    record makes of them (null as None; a masked integer as its text, as ``json.dumps(default=str)``
    writes the numpy integer there); None for dtypes left to pandas (timestamps, masked floats
    and bools, rare types)."""
    if col.is_list:
        return col.values_at(positions)
    data, dtype = col.data, col.dtype
    assert isinstance(data, pa.Array)
    if dtype not in (STR, INT64, FLOAT64, NULLABLE_INT, BOOL, OBJECT):
        return None
    taken = data.take(pa.array(positions, type=pa.int64()))
    kind = taken.type
    if dtype == FLOAT64:  # int64 with nulls reads as float64 in pandas: 7 -> 7.0
        if not (pa.types.is_int64(kind) or pa.types.is_floating(kind)):
            return None
        return [None if v is None else float(v) for v in taken.to_pylist()]
    if dtype == OBJECT:
        return taken.to_pylist() if not pa.types.is_null(kind) else [None] * len(taken)
    if dtype == STR and not pa.types.is_string(kind):
        return None
    if dtype in (INT64, NULLABLE_INT) and not pa.types.is_int64(kind):
        return None
    if dtype == NULLABLE_INT:  # a pandas row holds numpy integers here, which a record writes as text
        return [None if v is None else str(v) for v in taken.to_pylist()]
    if dtype == BOOL and not pa.types.is_boolean(kind):
        return None
    plain: list[Any] = taken.to_pylist()
    return plain


def _record_dtype(array: pa.Array) -> Any:
    """The dtype ``array.to_pandas()`` gives the whole column (the pandas engine's view of it)."""
    kind = array.type
    if pa.types.is_int64(kind):
        return FLOAT64 if array.null_count else INT64
    if pa.types.is_float64(kind):
        return FLOAT64
    if pa.types.is_string(kind):
        return STR
    if pa.types.is_boolean(kind):
        return OBJECT if array.null_count else BOOL
    return array.to_pandas().dtype  # rare types: ask pandas itself


def add_column(columns: dict[str, Column], name: str, array: pa.Array, sep: str | None) -> None:
    """Mirror of the pandas engine's frame building: flatten structs, keep nested values as objects."""
    if sep is not None and pa.types.is_struct(array.type) and array.type.num_fields:
        for fld, child in zip(array.type, array.flatten(), strict=True):  # one child per struct field
            add_column(columns, f"{name}{sep}{fld.name}", child, sep)
    elif pa.types.is_null(array.type) or pa.types.is_struct(array.type) or pa.types.is_list(array.type):
        columns[name] = Column(array, OBJECT)
    else:
        dtype = _record_dtype(array)
        if dtype == FLOAT64 and pa.types.is_int64(array.type) and len(array) > array.null_count:
            import pyarrow.compute as pc

            bounds = pc.min_max(array).as_py()
            if max(-bounds["min"], bounds["max"]) > _EXACT:  # float64 rounds these, as pandas did
                array = array.cast(pa.float64(), safe=False)
        columns[name] = Column(array, dtype)


def _names(records: list[dict[str, Any]]) -> list[str]:
    """Field names in order of first appearance."""
    if len(records) < 64:
        return list(dict.fromkeys(k for r in records for k in r))
    first = records[0].keys()
    odd = [r for r in records if r.keys() != first]  # a C-level comparison; odd records are rare
    return list(dict.fromkeys([*first, *(k for r in odd for k in r)]))


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


def _same_keys(objects: Sequence[Any]) -> list[Sequence[Any]] | None:
    """Each field's values, fields in the first object's order, when every object is a dict with
    exactly the first one's keys (the usual page); None otherwise.  C-level: ``itemgetter`` per
    object, one transposition; a missing key or a non-dict fails the getter, an extra key the
    count of keys."""
    keys = list(objects[0]) if type(objects[0]) is dict else []
    if not keys:
        return None
    try:
        rows = list(map(itemgetter(*keys), objects))
    except (KeyError, TypeError, IndexError):
        return None
    if sum(map(len, objects)) != len(keys) * len(objects):
        return None
    if len(keys) == 1:
        return [rows]
    return list(zip(*rows, strict=True))


def _fields(records: list[dict[str, Any]]) -> list[tuple[str, Sequence[Any]]]:
    """Each field's values (None where a record lacks it), in order of first appearance."""
    same = _same_keys(records) if len(records) >= 64 else None
    if same is not None:
        return list(zip(records[0], same, strict=True))
    return [(name, [r.get(name) for r in records]) for name in _names(records)]


def _add_objects(columns: dict[str, Column], name: str, values: Sequence[Any], sep: str) -> bool:
    """Flatten a field whose values are all dicts with the same keys, one Arrow array per key:
    what inferring one struct array and flattening it gives, without the struct.  False (and
    nothing added) for any other field, or when a key's values are not one Arrow type."""
    children = _same_keys(values)
    if children is None:
        return False
    arrays = []
    for child in children:
        try:
            arrays.append(pa.array(child))
        except _ARROW_ERRORS:
            return False  # the struct would not infer either: the field stays objects
    for key, array in zip(values[0], arrays, strict=True):
        add_column(columns, f"{name}{sep}{key}", array, sep)
    return True


def from_records(records: list[Any], flatten_sep: str | None = None) -> Batch:
    """Records (JSON objects) as a batch; each field through Arrow's C type inference."""
    if not records:
        return Batch({}, np.arange(0))
    if set(map(type, records)) != {dict} and not all(isinstance(r, dict) for r in records):
        bad = next(r for r in records if not isinstance(r, dict))
        raise RecordsError(f"records must be JSON objects, got {type(bad).__name__}")
    columns: dict[str, Column] = {}
    for name, values in _fields(records):
        if flatten_sep is not None and type(values[0]) is dict and _add_objects(columns, name, values, flatten_sep):
            continue
        try:
            array = pa.array(values)
        except _ARROW_ERRORS:
            columns[name] = Column(list(values), OBJECT)
            continue
        add_column(columns, name, array, flatten_sep)
    return Batch(columns, np.arange(len(records)))
