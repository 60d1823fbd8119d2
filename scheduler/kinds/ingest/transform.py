"""Declarative cleaning steps applied in order to one batch at a time.

A run's batches go through :meth:`Transformer.apply_batch`: Arrow columns and the kernels of
:mod:`scheduler.kinds.ingest.arrow_steps` first, and from the first step (or part of one) those
leave to pandas, the pandas steps here on a DataFrame view of the batch.  The pandas steps are the
reference: the kernels give exactly what they give (tests/ingest/test_ingest_golden.py pins it).

Invariant: every input row ends up in exactly one place: the output frame, the rejects frame
(with the step and a reason naming the bad value), or a counter (``duplicates`` for rows dropped
by ``dedupe``, ``filtered`` for ``filter`` with ``on_fail: drop`` and rows a hook removed).
Nothing disappears silently.  Steps are pure per batch; cross-batch dedupe lives in ``keys``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from scheduler.kinds.ingest import spec as s
from scheduler.kinds.ingest.arrow_steps import ArrowSteps
from scheduler.kinds.ingest.columns import Batch, RecordsError, from_frame, from_records
from scheduler.kinds.ingest.expr import parse_expression
from scheduler.kinds.ingest.page_batch import NotExact, pages_to_batch
from scheduler.kinds.ingest.pages import ArrowPage
from scheduler.kinds.ingest.parsing import as_text, is_stringy, parse_numbers, parse_timestamps
from scheduler.kinds.ingest.results import BatchResult, TransformError, reject_frame
from scheduler.kinds.registry import resolve

_DECIMAL = re.compile(r"^decimal(?:\((\d+),(\d+)\))?$")
def records_to_frame(records: list[Any], flatten_sep: str | None = None) -> pd.DataFrame:
    """A frame from JSON records; non-object records are an error.

    Each field becomes a column through Arrow's C type inference (much faster than pandas' row
    by row construction); a field whose values mix types (``3`` and ``"3"``) stays an object
    column for the cast steps to sort out.  With ``flatten_sep``, nested objects that Arrow reads
    as structs are flattened here (``customer.email`` -> ``customer_email``); anything Arrow
    cannot read as a struct is left to the ``flatten`` step, which rejects non-objects.
    """
    if not records:
        return pd.DataFrame()
    if not all(isinstance(r, dict) for r in records):
        bad = next(r for r in records if not isinstance(r, dict))
        raise TransformError(f"records must be JSON objects, got {type(bad).__name__}")
    names = list(dict.fromkeys(k for r in records for k in r)) if len(records) < 64 else _names(records)
    columns: dict[str, Any] = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            array = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            columns[name] = pd.Series(values, dtype=object)
            continue
        _add_arrow(columns, name, array, flatten_sep)
    return pd.DataFrame(columns)


def _names(records: list[dict[str, Any]]) -> list[str]:
    first = records[0].keys()
    odd = [r for r in records if r.keys() != first]  # a C-level comparison; odd records are rare
    return list(dict.fromkeys([*first, *(k for r in odd for k in r)]))


def _add_arrow(columns: dict[str, Any], name: str, array: pa.Array, sep: str | None) -> None:
    if sep is not None and pa.types.is_struct(array.type) and array.type.num_fields:
        for field, child in zip(array.type, array.flatten(), strict=True):  # one child per struct field
            _add_arrow(columns, f"{name}{sep}{field.name}", child, sep)
    elif pa.types.is_null(array.type):
        columns[name] = pd.Series([None] * len(array), dtype=object)
    elif pa.types.is_struct(array.type) or pa.types.is_list(array.type):
        columns[name] = pd.Series(array.to_pylist(), dtype=object)
    else:
        columns[name] = array.to_pandas()


def load_hook(ref: str) -> Callable[..., Any]:
    try:
        hook: Callable[..., Any] = resolve(ref)
    except (ImportError, AttributeError) as exc:
        raise TransformError(f"cannot load hook {ref!r}: {exc}") from None
    return hook




_PLAIN_INT = re.compile(r"-?[0-9]{1,15}")
_EXACT = 2**53


def _as_string(v: Any) -> Any:
    """One value for ``cast: string``: text stays, objects and lists become JSON, null stays null."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return None if pd.isna(v) else str(v)


def _small_ints(values: Any) -> list[int | None] | None:
    """The values as ints when each is null, an int or a plain decimal integer string, all within
    2**53 (so the general path, via strings and maybe float64, reads them exactly alike); else None."""
    out: list[int | None] = []
    append, match = out.append, _PLAIN_INT.fullmatch
    for v in values:
        t = type(v)
        if t is int:
            if not -_EXACT <= v <= _EXACT:
                return None
            append(v)
        elif v is None:
            append(None)
        elif t is str and match(v):
            append(int(v))
        else:
            return None
    return out


class Transformer:
    """Compiled steps; ``apply`` runs them on one batch.  ``dedupe`` is the spec's dedupe (or None)."""

    def __init__(self, steps: Sequence[Any], warn: Callable[[str, str], None]) -> None:
        self.steps = list(steps)
        self.warn = warn
        first = self.steps[0] if self.steps else None
        self.flatten_sep = first.separator() if isinstance(first, s.FlattenStep) else None
        self.dedupe: s.DedupeSpec | None = next((st.dedupe for st in steps if isinstance(st, s.DedupeStep)), None)
        self._hooks = {st.hook: load_hook(st.hook) for st in steps if isinstance(st, s.HookStep)}
        self._arrow = ArrowSteps(warn)

    def batch(self, records: list[Any]) -> Batch:
        """Page records as an Arrow batch (nested objects flattened when the first step says so)."""
        try:
            return from_records(records, self.flatten_sep)
        except RecordsError as exc:
            raise TransformError(str(exc)) from None

    def batch_pages(self, pages: Sequence[ArrowPage | list[Any]]) -> Batch:
        """The records of ``pages`` (read by Arrow, or Python records) as one batch: straight from
        the Arrow columns when every page has them and they combine exactly, else from records."""
        arrow = [p for p in pages if isinstance(p, ArrowPage)]
        if len(arrow) == len(pages):
            try:
                return pages_to_batch(arrow, self.flatten_sep)
            except NotExact:
                pass
        return self.batch([r for p in pages for r in (p.python_records() if isinstance(p, ArrowPage) else p)])

    def apply_batch(self, batch: Batch) -> BatchResult:
        """Run the steps on Arrow columns; a step (or part of one) the Arrow kernels leave to pandas
        runs on a DataFrame view of the batch, and the batch goes back to Arrow columns after it
        where :func:`~scheduler.kinds.ingest.columns.from_frame` can do that exactly (a hook's
        usual result).  ``frame`` of the result is the :class:`Batch` or, where the last step left
        a frame that could not go back, the DataFrame; either way it holds what :meth:`apply` would give."""
        result = BatchResult(batch)
        frame: pd.DataFrame | None = None
        for index, step in enumerate(self.steps):
            name = f"{index}:{next(iter(type(step).model_fields))}"
            if frame is None:
                batch, rest = self._arrow.run(step, name, batch, result)
                if rest is None:
                    continue
                frame, step = batch.frame(), rest
            frame = self._step(step, name, frame, result)
            back = from_frame(frame)  # the next steps (and the writer) on Arrow columns again, where exact
            if back is not None:
                batch, frame = back, None
        result.frame = batch if frame is None else frame
        return result

    def apply(self, frame: pd.DataFrame) -> BatchResult:
        result = BatchResult(frame)
        for index, step in enumerate(self.steps):
            name = f"{index}:{next(iter(type(step).model_fields))}"
            result.frame = self._step(step, name, result.frame, result)
        return result

    def _present(self, frame: pd.DataFrame, columns: Sequence[str], step: str) -> list[str]:
        for column in columns:
            if column not in frame.columns:
                self.warn(column, step)
        return [c for c in columns if c in frame.columns]

    def _step(self, step: Any, name: str, df: pd.DataFrame, out: BatchResult) -> pd.DataFrame:
        if isinstance(step, s.FlattenStep):
            return self._flatten(df, step.separator(), name, out)
        if isinstance(step, s.RenameStep):
            return df.rename(columns={k: v for k, v in step.rename.items() if k in df.columns})
        if isinstance(step, s.SelectStep):
            for column in step.select:
                if column not in df.columns:
                    self.warn(column, name)
                    df[column] = None
            return df[list(step.select)]
        if isinstance(step, s.CastStep):
            for column, target in step.cast.items():
                if column in self._present(df, [column], name):
                    df = self._cast(df, column, target, name, out)
            return df
        if isinstance(step, s.ParseNumberStep):
            for column in self._present(df, step.parse_number, name):
                df = self._parse_number(df, column, name, out)
            return df
        if isinstance(step, (s.LowerStep, s.UpperStep, s.StripStep)):
            op = "lower" if isinstance(step, s.LowerStep) else "upper" if isinstance(step, s.UpperStep) else "strip"
            for column in self._present(df, getattr(step, op), name):
                col = df[column]
                changed = getattr(col.str, op)() if is_stringy(col) else col
                df[column] = changed.where(changed.notna(), col)  # non-strings pass through unchanged
            return df
        if isinstance(step, s.DedupeStep):
            return self._dedupe(df, step.dedupe, name, out)
        if isinstance(step, s.DeriveStep):
            for column, text in step.derive.items():
                value = parse_expression(text).evaluate(df)
                df[column] = value
            return df
        if isinstance(step, s.FilterStep):
            keep = parse_expression(step.filter.expr).evaluate(df)
            keep = pd.Series(keep, index=df.index) if not isinstance(keep, pd.Series) else keep
            keep = keep.fillna(False).astype(bool)
            if (~keep).any():
                if step.filter.on_fail == "reject":
                    out.rejects.append(reject_frame(df, ~keep, name, f"filter failed: {step.filter.expr}"))
                else:
                    out.filtered += int((~keep).sum())
            return df[keep]
        if isinstance(step, s.HookStep):
            return self._hook(df, step.hook, name, out)
        raise AssertionError(f"unknown step {step!r}")

    def _flatten(self, df: pd.DataFrame, sep: str, name: str, out: BatchResult) -> pd.DataFrame:
        for _ in range(32):  # nesting depth bound
            nested = [c for c in df.columns if df[c].dtype == object and any(isinstance(v, dict) for v in df[c])]
            if not nested:
                return df
            for column in nested:
                col = df[column]
                bad = col.map(lambda v: v is not None and not isinstance(v, dict)
                              and not (isinstance(v, float) and np.isnan(v)))
                if bad.any():
                    out.rejects.append(reject_frame(df, bad, name, f"flatten {column}: expected an object"))
                    df, col = df[~bad], col[~bad]
                inner = pd.DataFrame.from_records([v if isinstance(v, dict) else {} for v in col], index=df.index)
                inner.columns = [f"{column}{sep}{c}" for c in inner.columns]
                position = list(df.columns).index(column)
                left, right = df.iloc[:, :position], df.iloc[:, position + 1:]
                df = pd.concat([left, inner, right], axis=1)
        raise TransformError("flatten: objects nested more than 32 levels deep")

    def _fail(self, df: pd.DataFrame, bad: pd.Series, column: str, what: str, name: str,
              out: BatchResult) -> pd.DataFrame:
        if not bad.any():
            return df
        reasons = [f"{column}: cannot {what}: {str(v)!r}" for v in df.loc[bad, column]]
        out.rejects.append(reject_frame(df, bad, name, reasons))
        return df[~bad]

    def _cast(self, df: pd.DataFrame, column: str, target: s.CastSpec, name: str, out: BatchResult) -> pd.DataFrame:
        col, kind = df[column], target.type
        if kind == "int" and col.dtype == object and (small := _small_ints(col.array)) is not None:
            df[column] = pd.array(small, dtype="Int64")  # what the general path gives, without its string round trip
        elif kind in ("int", "float"):
            if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
                num = col.astype("float64") if kind == "float" else col
            else:
                num = pd.to_numeric(as_text(col).str.strip() if is_stringy(col) else col, errors="coerce")
            bad = col.notna() & num.isna()
            if kind == "int":
                bad |= num.notna() & ((num % 1) != 0)
            df = self._fail(df, bad, column, f"cast to {kind}", name, out)
            num = num[~bad]
            df[column] = num.astype("Int64") if kind == "int" else num.astype("float64")
        elif kind == "string":
            if not (col.dtype == "str"):
                df[column] = col.map(_as_string).astype("str")
        elif kind == "bool":
            if not pd.api.types.is_bool_dtype(col.dtype):
                lowered = as_text(col).str.strip().str.lower()
                mapping = {**{v: True for v in target.true_values}, **{v: False for v in target.false_values}}
                flags = lowered.map(mapping)
                bad = col.notna() & flags.isna()
                df = self._fail(df, bad, column, "cast to bool", name, out)
                df[column] = flags[~bad].astype("boolean")
        elif kind in ("timestamp", "date"):
            parsed = parse_timestamps(col, target)
            bad = col.notna() & parsed.isna()
            df = self._fail(df, bad, column, f"parse as {kind}", name, out)
            parsed = parsed[~bad]
            if kind == "date":  # the calendar date where the value was recorded, not in UTC
                parsed = parsed.dt.tz_convert(target.timezone or "UTC").dt.tz_localize(None).dt.normalize()
            df[column] = parsed
        elif (m := _DECIMAL.match(kind)):
            precision, scale = int(m.group(1) or 18), int(m.group(2) or 2)
            quantum = Decimal(1).scaleb(-scale)

            def to_decimal(v: Any) -> Any:
                if v is None or (isinstance(v, float) and np.isnan(v)):
                    return None
                try:
                    d = Decimal(str(v).strip()).quantize(quantum)
                except (InvalidOperation, ValueError):
                    return "bad"
                return d if len(d.as_tuple().digits) <= precision and d.is_finite() else "bad"

            values = col.map(to_decimal)
            bad = values.map(lambda v: isinstance(v, str))
            df = self._fail(df, bad, column, f"cast to {kind}", name, out)
            arrow = pa.array(values[~bad].tolist(), type=pa.decimal128(precision, scale))
            df[column] = pd.Series(arrow, index=df.index, dtype=pd.ArrowDtype(arrow.type))
        return df

    def _parse_number(self, df: pd.DataFrame, column: str, name: str, out: BatchResult) -> pd.DataFrame:
        col = df[column]
        if pd.api.types.is_numeric_dtype(col.dtype):
            return df
        num = parse_numbers(col)
        bad = col.notna() & num.isna()
        df = self._fail(df, bad, column, "parse a number from", name, out)
        df[column] = num[~bad].astype("float64")
        return df

    def _dedupe(self, df: pd.DataFrame, spec: s.DedupeSpec, name: str, out: BatchResult) -> pd.DataFrame:
        present = self._present(df, list(spec.columns) + ([spec.by] if spec.by else []), name)
        if len(present) < len(spec.columns) + (1 if spec.by else 0):
            raise TransformError(f"dedupe: column(s) missing from the data: {sorted(set(spec.columns) - set(present))}")
        null_key = df[list(spec.columns)].isna().any(axis=1)
        if null_key.any():
            out.rejects.append(reject_frame(df, null_key, name, f"dedupe key {list(spec.columns)} is null"))
            df = df[~null_key]
        ordered = df
        if spec.by:  # nulls sort so they lose: last for keep first, first for keep last
            ordered = df.sort_values(spec.by, kind="stable", na_position="last" if spec.keep == "first" else "first")
        dup = ordered.duplicated(list(spec.columns), keep=spec.keep)
        out.duplicates += int(dup.sum())
        return ordered[~dup].sort_index() if spec.by else ordered[~dup]

    def _hook(self, df: pd.DataFrame, ref: str, name: str, out: BatchResult) -> pd.DataFrame:
        before = len(df)
        try:
            returned = self._hooks[ref](df)
        except Exception as exc:  # the hook is user code: name it in the failure
            raise TransformError(f"hook {ref} failed: {type(exc).__name__}: {exc}") from exc
        rejects = None
        if isinstance(returned, tuple) and len(returned) == 2:
            returned, rejects = returned
        if not isinstance(returned, pd.DataFrame):
            raise TransformError(f"hook {ref} must return a DataFrame, got {type(returned).__name__}")
        n_rejected = 0
        if rejects is not None and len(rejects):
            reasons = (rejects["reason"] if "reason" in rejects.columns
                       else pd.Series("rejected by hook", index=rejects.index))
            out.rejects.append(reject_frame(rejects.drop(columns=["reason"], errors="ignore"), slice(None), name,
                                            reasons))
            n_rejected = len(rejects)
        lost = before - len(returned) - n_rejected
        if lost > 0:
            out.filtered += lost
        return returned
