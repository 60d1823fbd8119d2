"""Gates before publishing, computed incrementally over the output rows of a run.

Invariant: statistics see exactly the rows that will be published by this run (the sink calls
:meth:`RunStats.reset` and replays the rows when a dedupe rewrite pass changes them), so a
passing check speaks for the published data.  Memory: a few scalars per checked column plus one
8-byte digest per distinct value of ``unique`` columns, except columns the caller already keeps
distinct (``distinct``: the sole key of a ``keep: first`` dedupe, whose key set guarantees it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from scheduler.errors import JobFailed
from scheduler.kinds.ingest.keys import KeySet, digests
from scheduler.kinds.ingest.spec import Checks


class CheckFailed(JobFailed):
    """One or more checks failed; nothing was published."""


def _bigger(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b > a) else a


def _smaller(a: Any, b: Any) -> Any:
    return b if a is None or (b is not None and b < a) else a


class RunStats:
    """Row count, null counts, value ranges, uniqueness and the watermark of the output rows."""

    def __init__(self, checks: Checks, cursor_field: str | None = None, distinct: tuple[str, ...] = ()) -> None:
        self.checks, self.cursor_field = checks, cursor_field
        self.distinct = frozenset(distinct)  # no two observed rows share a value here: nothing to count
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.nulls = {c: 0 for c in self.checks.not_null}
        self.low: dict[str, Any] = {c: None for c in self.checks.ranges}
        self.high: dict[str, Any] = {c: None for c in self.checks.ranges}
        self.unique = {c: KeySet() for c in self.checks.unique if c not in self.distinct}
        self.duplicated = {c: 0 for c in self.checks.unique}
        self.cursor_max: Any = None

    def observe(self, table: pa.Table) -> None:
        """Account for ``table``, a batch of output rows."""
        if table.num_rows == 0:
            return
        self.rows += table.num_rows
        for column in self.nulls:
            self.nulls[column] += table.column(column).null_count if column in table.column_names else table.num_rows
        for column in self.low:
            if column in table.column_names:
                bounds = pc.min_max(table.column(column)).as_py()
                self.low[column] = _smaller(self.low[column], bounds["min"])
                self.high[column] = _bigger(self.high[column], bounds["max"])
        for column, seen in self.unique.items():
            if column in table.column_names:
                probe = digests(table.select([column]), [column])
                before = len(seen)
                seen.add(probe)
                self.duplicated[column] += len(probe) - (len(seen) - before)
        if self.cursor_field and self.cursor_field in table.column_names:
            self.cursor_max = _bigger(self.cursor_max, pc.max(table.column(self.cursor_field)).as_py())

    def failures(self, rows_fetched: int, rows_rejected: int, columns: list[str]) -> list[str]:
        """Human-readable failed checks (empty when all pass)."""
        c, out = self.checks, []
        for column in (*c.not_null, *c.unique, *c.ranges):
            if column not in columns:
                out.append(f"check refers to column {column!r}, which is not in the output schema")
        if self.rows < c.min_rows:
            out.append(f"min_rows: {self.rows} rows, at least {c.min_rows} required")
        for column, count in self.nulls.items():
            if count:
                out.append(f"not_null: {column} has {count} null value(s)")
        for column, count in self.duplicated.items():
            if count:
                out.append(f"unique: {column} has {count} duplicate value(s)")
        for column, bounds in c.ranges.items():
            low, high = self.low.get(column), self.high.get(column)
            if bounds.min is not None and low is not None and low < bounds.min:
                out.append(f"range: {column} minimum {low} is below {bounds.min}")
            if bounds.max is not None and high is not None and high > bounds.max:
                out.append(f"range: {column} maximum {high} is above {bounds.max}")
        if c.max_reject_ratio is not None and rows_fetched:
            ratio = rows_rejected / rows_fetched
            if ratio > c.max_reject_ratio:
                out.append(f"max_reject_ratio: {rows_rejected}/{rows_fetched} rows rejected ({ratio:.1%}), "
                           f"at most {c.max_reject_ratio:.1%} allowed")
        return out

    def watermark(self) -> str | None:
        value = self.cursor_max
        if value is None:
            return None
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return str(value)
