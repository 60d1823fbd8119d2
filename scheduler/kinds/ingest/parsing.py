"""Numbers and timestamps out of text, one rule for both engines.

Numbers as ``parse_number`` reads them (``"$12.50"``, ``"1,200"``, ``"(3.00)"``): the Arrow
kernels (``arrow_steps``) use :data:`NUMBER_JUNK` over whole columns; the pandas path
(``transform``, and the values the kernels leave to it) uses :func:`parse_numbers`.  Timestamps
that the kernels cannot read exactly go through :func:`parse_timestamps`, as in ``transform``.
"""

from __future__ import annotations

import pandas as pd

from scheduler.kinds.ingest.spec_transform import CastSpec

NUMBER_JUNK = r"[^0-9eE+\-.]"  # a string, not a compiled pattern: Arrow strings then stay in C
OFFSET = r"(?:[zZ]|[+-]\d{2}:?\d{2})\s*$"  # a UTC offset at the end of a timestamp


def is_stringy(col: pd.Series) -> bool:
    return col.dtype == object or pd.api.types.is_string_dtype(col.dtype)


def as_text(col: pd.Series) -> pd.Series:
    """Values as strings (nulls stay null)."""
    if isinstance(col.dtype, pd.StringDtype) or col.dtype == "str":
        return col
    return col.astype("str").where(col.notna(), None)


def parse_numbers(col: pd.Series) -> pd.Series:
    """Each value as a float64 (NaN where no number can be read); accounting-style ``(12.50)`` is
    negative."""
    text = as_text(col).str.replace(",", "", regex=False).str.replace(NUMBER_JUNK, "", regex=True)
    negative = as_text(col).str.strip().str.match(r"^\(.*\)$").fillna(False)
    num = pd.to_numeric(text.where(text != "", None), errors="coerce")
    return num.where(~negative.astype(bool), -num).astype("float64")


def parse_timestamps(col: pd.Series, target: CastSpec) -> pd.Series:
    """Parse to ``datetime64[us, UTC]``; failures become NaT.  Values without an offset are in
    ``timezone`` (UTC when unset); values with one keep it, even mixed in one column."""
    tz = target.timezone or "UTC"
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        aware = getattr(col.dt, "tz", None) is not None
        parsed = col if aware else col.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    elif target.format in ("unix", "unix_ms"):
        numbers = pd.to_numeric(col, errors="coerce")
        parsed = pd.to_datetime(numbers, unit="s" if target.format == "unix" else "ms", utc=True, errors="coerce")
    else:
        text = as_text(col) if is_stringy(col) else col.astype("str")
        fmt = target.format or "ISO8601"
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)  # naive values read as UTC
        if tz != "UTC":
            naive = ~text.str.contains(OFFSET, regex=True).fillna(False).astype(bool)
            if naive.any():
                local = pd.to_datetime(text.where(naive), format=fmt, errors="coerce")
                if getattr(local.dt, "tz", None) is None:
                    local = local.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
                parsed = parsed.where(~naive, local)
    utc: pd.Series = parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return utc
