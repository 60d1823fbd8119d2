"""What one batch's transform produced, and how a rejected row is recorded.

Invariant: every input row of a batch ends up in exactly one place: the output (a pandas
DataFrame or an Arrow :class:`~scheduler.kinds.ingest.columns.Batch`), a rejects frame (with the
step and a reason naming the bad value), or a counter (``duplicates``, ``filtered``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from scheduler.errors import JobFailed

REJECT_COLUMNS = ("reason", "step", "record")


class TransformError(JobFailed):
    """A step cannot run at all (e.g. a hook failed); the run fails."""


@dataclass
class BatchResult:
    frame: Any  # a pandas DataFrame, or a columns.Batch from the Arrow steps
    rejects: list[pd.DataFrame | pa.Table] = field(default_factory=list)  # columns REJECT_COLUMNS
    duplicates: int = 0
    filtered: int = 0

    @property
    def rejected(self) -> int:
        return sum(len(r) for r in self.rejects)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return value
    return None if pd.isna(value) else value


def record_json(names: list[str], row: Any) -> str:
    """One rejected row as its ``record`` text: ``row``'s values (as a pandas row yields them, or
    already plain: null as None) by column name, as JSON."""
    return json.dumps({n: _plain(v) for n, v in zip(names, row, strict=True)}, default=str, ensure_ascii=False)


def reject_rows(names: list[str], rows: list[tuple[Any, ...]], step: str, reasons: list[str]) -> pa.Table:
    """Rows given as plain Python values (null as None, as :func:`_plain` makes them) as rejects,
    an Arrow table of the reject columns: the same records :func:`reject_frame` writes for the
    same rows of a DataFrame."""
    records = [record_json(names, row) for row in rows]
    return pa.table([pa.array(reasons, pa.string()), pa.array([step] * len(rows), pa.string()),
                     pa.array(records, pa.string())], names=list(REJECT_COLUMNS))


def reject_frame(frame: pd.DataFrame, mask: Any, step: str, reason: Any) -> pd.DataFrame:
    """The rows of ``frame`` under ``mask`` as rejects: reason, step, record (the row as JSON)."""
    bad = frame.loc[mask]
    names = list(bad.columns)
    # rejects are few: plain Python is cheapest
    records = [record_json(names, row) for row in bad.itertuples(index=False, name=None)]
    if isinstance(reason, pd.Series):
        reasons = [str(r) for r in reason.loc[mask]]
    elif isinstance(reason, list):
        reasons = reason
    else:
        reasons = [str(reason)] * len(bad)
    return pd.DataFrame({"reason": reasons, "step": [step] * len(bad), "record": records})


