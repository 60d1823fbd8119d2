"""The transform steps over Arrow columns, with ``pyarrow.compute`` kernels on whole batches.

Each step here gives exactly what the pandas steps in :mod:`scheduler.kinds.ingest.transform`
give (the same values, dtypes, rejects, reasons and counts), or declines: :meth:`ArrowSteps.run`
then returns the part of the step it did not do, and the batch continues in pandas from there.
Declining is always safe, so the kernels cover the common shapes (typed string and integer
columns, ISO-8601 UTC timestamps, plain decimal numbers) and leave every odd value to pandas:
a value a fast kernel cannot read exactly as pandas would goes to pandas on its own (timestamps,
numbers), or the column does (mixed JSON types, nested objects, floats cast to int).

Invariant: a step that declines has appended no rejects and changed no count for the part it
hands back; the part it did is final.
"""

from __future__ import annotations

from collections.abc import Callable
from types import NoneType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scheduler.kinds.ingest import spec as s
from scheduler.kinds.ingest.columns import (
    BOOL,
    FLOAT64,
    INT64,
    NULLABLE_BOOL,
    NULLABLE_FLOAT,
    NULLABLE_INT,
    OBJECT,
    STR,
    UTC_US,
    Batch,
    Column,
    text_buffers,
)
from scheduler.kinds.ingest.expr import parse_expression
from scheduler.kinds.ingest.parsing import NUMBER_JUNK, parse_numbers, parse_timestamps
from scheduler.kinds.ingest.results import BatchResult, reject_frame, reject_rows

_PLAIN_INT = r"^-?[0-9]{1,15}$"  # what int() and pandas read alike, exactly (below 2**53)
_PLAIN_NUMBER = r"^-?[0-9]{1,15}(\.[0-9]{1,15})?$"  # ... and float() and pandas, correctly rounded
_ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_EXACT = 2**53
_MEMO_SIZE = 10_000  # distinct timestamp texts remembered from the pandas parser
_NUMERIC = (INT64, FLOAT64, NULLABLE_INT, NULLABLE_FLOAT, BOOL, NULLABLE_BOOL)
_TO_ARROW = (INT64, FLOAT64, BOOL, STR, NULLABLE_INT, NULLABLE_FLOAT, NULLABLE_BOOL, UTC_US)


def _mask(array: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as false."""
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_null(col: Column) -> np.ndarray:
    if isinstance(col.data, list):
        return np.fromiter((v is None for v in col.data), dtype=bool, count=len(col.data))
    return _mask(col.data.is_null(nan_is_null=True))


def _mixed_ints(numbers: pa.Array, texts: pa.Array) -> pa.Array | None:
    """What :meth:`ArrowSteps._ints` makes of the Python values of a mixed column, from its two halves."""
    if not pa.types.is_int64(numbers.type) or not pa.types.is_string(texts.type):
        return None
    if numbers.null_count < len(numbers):
        bounds = pc.min_max(numbers).as_py()
        if max(-bounds["min"], bounds["max"]) > _EXACT:
            return None
    present = texts.drop_null()
    if len(present) and not pc.all(pc.match_substring_regex(present, _PLAIN_INT)).as_py():
        return None
    return pc.coalesce(numbers, pc.cast(texts, pa.int64()))


_ISO_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_ISO_MARKS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":"), 19: ord("Z")}


def _iso_utc_exact(text: pa.Array, parsed: pa.Array) -> np.ndarray:
    """Rows whose text is ``YYYY-MM-DDTHH:MM:SSZ`` (years 1900-2199) and whose ``parsed`` time has
    the day and second written: the strptime kernel rolls an invalid day or second over (Feb 30
    -> Mar 2, :60 -> :00), pandas rejects them.  Checked on the fixed-width bytes with numpy."""
    offsets, data = text_buffers(text)
    lengths = np.diff(offsets)
    plain: np.ndarray = lengths == 20
    if text.null_count:
        plain &= ~_mask(text.is_null())
    rows = np.flatnonzero(plain)
    if not len(rows):
        return plain
    if len(rows) == len(text) and offsets[-1] - offsets[0] == 20 * len(rows):
        chars = data[offsets[0]:offsets[-1]].reshape(-1, 20)  # every row plain: one block, no copy
    else:
        chars = data[offsets[rows][:, None] + np.arange(20)]  # one row of 20 bytes per candidate
    digits = chars[:, _ISO_DIGITS]
    ok = ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    for at, mark in _ISO_MARKS.items():
        ok &= chars[:, at] == mark

    def number(first: int) -> np.ndarray:  # the two digits at ``first`` as a number
        pair: np.ndarray = (chars[:, first].astype(np.int16) - ord("0")) * 10 + (chars[:, first + 1] - ord("0"))
        return pair

    century = number(0)
    ok &= (century >= 19) & (century <= 21)
    day = number(8)
    second = number(17)
    # the whole column's fields (cheap kernels), then the candidates' rows of them
    read_day = pc.day(parsed).to_numpy(zero_copy_only=False)[rows]
    read_second = pc.second(parsed).to_numpy(zero_copy_only=False)[rows]
    valid = ~_mask(parsed.is_null())[rows]
    ok &= valid & (np.nan_to_num(read_day.astype(np.float64), nan=-1) == day)
    ok &= np.nan_to_num(read_second.astype(np.float64), nan=-1) == second
    plain[rows] = ok
    return plain


class ArrowSteps:
    """Runs the steps it can on a :class:`Batch`; ``warn(column, step)`` reports a missing column."""

    def __init__(self, warn: Callable[[str, str], None]) -> None:
        self.warn = warn
        # text -> what the pandas parser made of it (UTC, naive, NaT when unreadable), for timestamps
        # the kernel leaves to it: the same few unreadable values tend to come back batch after batch
        self._read_by_pandas: dict[str, np.datetime64] = {}

    def run(self, step: Any, name: str, batch: Batch, out: BatchResult) -> tuple[Batch, Any]:
        """``(batch after the part done, the step's remaining part for pandas or None)``."""
        if isinstance(step, s.CastStep):
            return self._per_column(step, "cast", list(step.cast.items()), name, batch, out,
                                    lambda b, item: self._cast(b, item[0], item[1], name, out))
        if isinstance(step, s.ParseNumberStep):
            return self._per_column(step, "parse_number", list(step.parse_number), name, batch, out,
                                    lambda b, column: self._parse_number(b, column, name, out))
        if isinstance(step, (s.LowerStep, s.UpperStep, s.StripStep)):
            op = "lower" if isinstance(step, s.LowerStep) else "upper" if isinstance(step, s.UpperStep) else "strip"
            return self._per_column(step, op, list(getattr(step, op)), name, batch, out,
                                    lambda b, column: self._case(b, column, op))
        if isinstance(step, s.DeriveStep):
            return self._per_column(step, "derive", list(step.derive.items()), name, batch, out,
                                    lambda b, item: self._derive(b, item[0], item[1]), warn=False)
        done: Batch | None = None
        if isinstance(step, s.FlattenStep):
            done = self._flatten_done(batch)
        elif isinstance(step, s.RenameStep):
            done = self._rename(batch, step.rename)
        elif isinstance(step, s.SelectStep):
            done = self._select(batch, step.select, name)
        elif isinstance(step, s.DedupeStep):
            done = self._dedupe(batch, step.dedupe, name, out)
        elif isinstance(step, s.FilterStep):
            done = self._filter(batch, step.filter, name, out)
        return (done, None) if done is not None else (batch, step)

    def _per_column(self, step: Any, field: str, items: list[Any], name: str, batch: Batch, out: BatchResult,
                    one: Callable[[Batch, Any], Batch | None], warn: bool = True) -> tuple[Batch, Any]:
        """Column by column; from the first column declined on, the rest is a step of its own for pandas."""
        for position, item in enumerate(items):
            column = item[0] if isinstance(item, tuple) else item
            if warn and column not in batch.columns:
                self.warn(column, name)  # as the pandas step does: warn and skip
                continue
            done = one(batch, item)
            if done is None:
                rest = items[position:]
                value = dict(rest) if isinstance(step, (s.CastStep, s.DeriveStep)) else tuple(rest)
                return batch, type(step).model_construct(**{field: value})
            batch = done
        return batch, None

    # --- rejects ------------------------------------------------------------------------------

    @staticmethod
    def _reject(batch: Batch, bad: np.ndarray, column: str, what: str, name: str, out: BatchResult) -> Batch:
        """Rows under ``bad`` to the rejects (reason naming ``column``'s value); the batch without them."""
        if not bad.any():
            return batch
        positions = np.flatnonzero(bad)
        rows = batch.plain_rows(positions) if batch.columns[column].dtype == STR else None
        if rows is not None:  # a string column's values: each non-null one is the text pandas shows
            at = list(batch.columns).index(column)
            texts = ["nan" if row[at] is None else str(row[at]) for row in rows]  # a null reads as NaN there
            reasons = [f"{column}: cannot {what}: {text!r}" for text in texts]
            out.rejects.append(reject_rows(list(batch.columns), rows, name, reasons))
        else:
            frame = batch.frame(positions)
            reasons = [f"{column}: cannot {what}: {str(v)!r}" for v in frame[column]]
            out.rejects.append(reject_frame(frame, slice(None), name, reasons))
        return batch.keep(~bad)

    @staticmethod
    def _reject_all(batch: Batch, positions: np.ndarray, name: str, reason: str, out: BatchResult) -> None:
        """Rows at ``positions`` to the rejects, all for one ``reason``."""
        rows = batch.plain_rows(positions)
        if rows is not None:
            out.rejects.append(reject_rows(list(batch.columns), rows, name, [reason] * len(rows)))
        else:
            out.rejects.append(reject_frame(batch.frame(positions), slice(None), name, reason))

    # --- steps --------------------------------------------------------------------------------

    def _cast(self, batch: Batch, column: str, target: s.CastSpec, name: str, out: BatchResult) -> Batch | None:
        col, kind = batch.columns[column], target.type
        if kind == "int":
            array = self._ints(col)
            return None if array is None else _replace(batch, column, Column(array, NULLABLE_INT))
        if kind == "float":
            if col.dtype in (INT64, FLOAT64, NULLABLE_INT, NULLABLE_FLOAT) and isinstance(col.data, pa.Array):
                if pa.types.is_floating(col.data.type) and pc.any(pc.is_nan(col.data)).as_py():
                    return None
                return _replace(batch, column, Column(col.data.cast(pa.float64(), safe=False), FLOAT64))
            return None
        if kind == "string":
            return batch if col.dtype == STR else None
        if kind == "timestamp":
            return self._timestamps(batch, column, target, name, out)
        return None  # bool, date, decimal: pandas

    @staticmethod
    def _ints(col: Column) -> pa.Array | None:
        """The column as int64 when every value is null, an int or a plain integer string, all exact."""
        if col.parts is not None:
            return _mixed_ints(*col.parts)
        data = col.data
        if isinstance(data, list):
            kinds = np.fromiter(map(type, data), dtype=object, count=len(data))
            # elementwise over an array of types (numpy ==), not a type check of one value
            is_int, is_str, is_none = kinds == int, kinds == str, kinds == NoneType  # noqa: E721
            if not (is_int | is_str | is_none).all():
                return None
            values = np.empty(len(data), dtype=object)
            values[:] = data
            out = np.zeros(len(data), dtype=np.int64)
            try:
                ints = pa.array(values[is_int].tolist(), type=pa.int64())
            except (pa.ArrowInvalid, OverflowError):
                return None
            if len(ints) and max(-pc.min(ints).as_py(), pc.max(ints).as_py()) > _EXACT:
                return None
            texts = pa.array(values[is_str].tolist(), type=pa.string())
            if len(texts) and not pc.all(pc.match_substring_regex(texts, _PLAIN_INT)).as_py():
                return None
            out[is_int] = ints.to_numpy()
            out[is_str] = pc.cast(texts, pa.int64()).to_numpy()
            return pa.array(out, mask=is_none)
        if col.dtype in (INT64, FLOAT64, NULLABLE_INT) and pa.types.is_int64(data.type):
            return data
        if col.dtype == STR and pa.types.is_string(data.type):
            present = data.drop_null()
            if len(present) and not pc.all(pc.match_substring_regex(present, _PLAIN_INT)).as_py():
                return None
            return pc.cast(data, pa.int64())
        return None

    def _timestamps(self, batch: Batch, column: str, target: s.CastSpec, name: str, out: BatchResult) -> Batch | None:
        """ISO-8601 UTC strings with a strptime kernel; values it cannot read exactly go to pandas one by one."""
        col = batch.columns[column]
        if col.dtype == UTC_US:
            return batch
        if col.dtype != STR or target.format is not None or (target.timezone or "UTC") != "UTC":
            return None
        text: pa.Array = col.data
        parsed = pc.strptime(text, format=_ISO_FORMAT, unit="s", error_is_null=True)
        plain = _iso_utc_exact(text, parsed)
        result = parsed.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype("datetime64[us]")
        others = np.flatnonzero(~plain & ~_mask(text.is_null()))
        if len(others):
            result[others] = self._by_pandas(text.take(pa.array(others, type=pa.int64())).to_pylist(), target)
        nulls = np.isnat(result)
        array = pa.array(result.view("int64"), type=pa.int64(), mask=nulls).view(pa.timestamp("us", tz="UTC"))
        bad = nulls & ~_mask(text.is_null())
        batch = self._reject(batch, bad, column, "parse as timestamp", name, out)
        if bad.any():
            array = array.filter(pa.array(~bad))
        return _replace(batch, column, Column(array, UTC_US))

    def _by_pandas(self, texts: list[str], target: s.CastSpec) -> np.ndarray:
        """``texts`` read as the pandas engine reads them (``datetime64[us]`` in UTC, NaT where it
        cannot), each value parsed once per run: that parser reads each value on its own (ISO 8601,
        any offset converted to UTC), so a remembered result is the result."""
        memo = self._read_by_pandas
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        if new:
            if len(memo) + len(new) > _MEMO_SIZE:
                memo.clear()
            parsed = parse_timestamps(pd.Series(new, dtype=STR), target)
            memo.update(zip(new, parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]"), strict=True))
        return np.array([memo[t] for t in texts], dtype="datetime64[us]")

    def _parse_number(self, batch: Batch, column: str, name: str, out: BatchResult) -> Batch | None:
        col = batch.columns[column]
        if col.dtype in _NUMERIC:
            return batch
        if col.dtype != STR:
            return None
        text: pa.Array = col.data
        cleaned = pc.replace_substring_regex(text, NUMBER_JUNK, "")
        plain = (_mask(pc.match_substring_regex(cleaned, _PLAIN_NUMBER))
                 & ~_mask(pc.match_substring_regex(text, r"[()]")))
        numbers = pc.cast(pc.if_else(pa.array(plain), cleaned, pa.scalar(None, pa.string())), pa.float64())
        values = numbers.to_numpy(zero_copy_only=False).astype(np.float64)
        present = ~_mask(text.is_null())
        others = np.flatnonzero(~plain & present)
        if len(others):
            values[others] = parse_numbers(batch.series(column, others)).to_numpy(dtype=np.float64, na_value=np.nan)
        bad = present & np.isnan(values)
        batch = self._reject(batch, bad, column, "parse a number from", name, out)
        values = values[~bad]
        return _replace(batch, column, Column(pa.array(values, from_pandas=True), FLOAT64))

    @staticmethod
    def _case(batch: Batch, column: str, op: str) -> Batch | None:
        col = batch.columns[column]
        if col.dtype == STR:
            kernel = {"lower": pc.utf8_lower, "upper": pc.utf8_upper, "strip": pc.utf8_trim_whitespace}[op]
            return _replace(batch, column, Column(kernel(col.data), STR))
        if col.dtype in _NUMERIC or col.dtype == UTC_US:
            return batch  # not strings: pandas leaves them as they are
        return None

    def _flatten_done(self, batch: Batch) -> Batch | None:
        """Nested records were flattened while building the batch; objects left over are for pandas."""
        for col in batch.columns.values():
            if col.dtype != OBJECT or col.parts is not None:  # integers and strings: no objects
                continue
            if isinstance(col.data, list):
                if dict in set(map(type, col.data)):
                    return None
            elif pa.types.is_struct(col.data.type):
                return None
        return batch

    @staticmethod
    def _rename(batch: Batch, mapping: dict[str, str]) -> Batch | None:
        names = [mapping.get(n, n) for n in batch.columns]
        if len(set(names)) != len(names):
            return None  # pandas would hold two columns of one name
        batch.columns = dict(zip(names, batch.columns.values(), strict=True))
        return batch

    def _select(self, batch: Batch, select: tuple[str, ...], name: str) -> Batch | None:
        if len(set(select)) != len(select):
            return None
        for column in select:
            if column not in batch.columns:
                self.warn(column, name)
                batch.columns[column] = Column(pa.nulls(batch.rows), OBJECT)
        batch.columns = {c: batch.columns[c] for c in select}
        return batch

    def _dedupe(self, batch: Batch, spec: s.DedupeSpec, name: str, out: BatchResult) -> Batch | None:
        if spec.by or len(spec.columns) != 1 or spec.columns[0] not in batch.columns:
            return None
        column = spec.columns[0]
        col = batch.columns[column]
        if col.dtype not in (STR, INT64, NULLABLE_INT, UTC_US) or not isinstance(col.data, pa.Array):
            return None
        null_key = _mask(col.data.is_null())
        if null_key.any():
            positions = np.flatnonzero(null_key)
            self._reject_all(batch, positions, name, f"dedupe key {list(spec.columns)} is null", out)
            batch = batch.keep(~null_key)
            col = batch.columns[column]
        codes = pc.dictionary_encode(col.data).indices.to_numpy(zero_copy_only=False)  # numbered by first sight
        if spec.keep == "last":
            codes = codes[::-1]
        first = np.ones(len(codes), dtype=bool)
        if len(codes) > 1:
            first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
        if spec.keep == "last":
            first = first[::-1]
        out.duplicates += int((~first).sum())
        return batch.keep(first)

    def _derive(self, batch: Batch, column: str, text: str) -> Batch | None:
        expr = parse_expression(text)
        if not expr.columns or not expr.columns <= batch.columns.keys():
            return None  # a constant, or a missing column (pandas raises the error)
        value = expr.evaluate(batch.frame(names=sorted(expr.columns)))
        if not isinstance(value, pd.Series) or value.dtype not in _TO_ARROW:
            return None
        batch.columns[column] = Column(pa.array(value, from_pandas=value.dtype == FLOAT64), value.dtype)
        return batch

    def _filter(self, batch: Batch, spec: s.FilterSpec, name: str, out: BatchResult) -> Batch | None:
        expr = parse_expression(spec.expr)
        if not expr.columns <= batch.columns.keys():
            return None
        keep = expr.evaluate(batch.frame(names=sorted(expr.columns)))
        frame_index = batch.pandas_index()
        keep = pd.Series(keep, index=frame_index) if not isinstance(keep, pd.Series) else keep
        mask = keep.fillna(False).astype(bool).to_numpy()
        if (~mask).any():
            if spec.on_fail == "reject":
                self._reject_all(batch, np.flatnonzero(~mask), name, f"filter failed: {spec.expr}", out)
            else:
                out.filtered += int((~mask).sum())
        return batch.keep(mask)


def _replace(batch: Batch, column: str, col: Column) -> Batch:
    batch.columns[column] = col
    return batch


