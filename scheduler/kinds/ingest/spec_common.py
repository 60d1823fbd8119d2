"""Validation helpers shared by the ingest spec models: template placeholders, dotted paths, types.

Imports only the standard library (the daemon loads specs without pandas or pyarrow).
"""

from __future__ import annotations

import re
import string

TEMPLATE_VARS = frozenset({"logical_date", "data_interval_start", "data_interval_end", "watermark", "job", "run_id"})
_DOTTED = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_DECIMAL = re.compile(r"^decimal(?:\((\d+),\s*(\d+)\))?$")
SCALAR_TYPES = ("int", "float", "string", "bool", "timestamp", "date")


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None


def _dotted(value: str | None) -> str | None:
    if value is not None and not _DOTTED.match(value):
        raise ValueError(f"must be a dotted path like 'data' or 'meta.total_pages', got {value!r}")
    return value


def _type_name(value: str) -> str:
    """Validate a column type name: int, float, string, bool, timestamp, date, decimal(p,s)."""
    text = value.strip().replace(" ", "")
    if text in SCALAR_TYPES or _DECIMAL.match(text):
        if (m := _DECIMAL.match(text)) and m.group(1):
            precision, scale = int(m.group(1)), int(m.group(2))
            if not (1 <= precision <= 38 and 0 <= scale <= precision):
                raise ValueError("decimal needs 1 <= precision <= 38 and 0 <= scale <= precision")
        return text
    raise ValueError(f"unknown type {value!r}; use one of {', '.join(SCALAR_TYPES)}, decimal(p,s)")
