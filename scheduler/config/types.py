"""Shared field types for config models: strict frozen base model, durations, timezones.

Every config model derives from :class:`Model`, so unknown keys are errors and specs are immutable
once loaded.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)

from scheduler.config.durations import DURATION_PATTERN, MAX_SECONDS, format_duration, parse_duration

__all__ = ["Duration", "FunctionRef", "Model", "TimezoneName", "format_duration", "parse_duration"]

FUNCTION_REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
_FUNCTION_REF = re.compile(FUNCTION_REF_PATTERN)


class Model(BaseModel):
    """Base for all config models: unknown keys rejected, instances frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an IANA timezone name like Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


# What users may write: "10m", "1h30m", 90 (seconds); the pattern is the parser's own grammar.
DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": DURATION_PATTERN},
              {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}],
}
Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str),
                     WithJsonSchema(DURATION_SCHEMA)]
TimezoneName = Annotated[str, BeforeValidator(_check_timezone)]


def _check_function_ref(value: str) -> str:
    if not _FUNCTION_REF.match(value):
        raise ValueError(f"must look like 'package.module:function', got {value!r}")
    return value


FunctionRef = Annotated[str, AfterValidator(_check_function_ref),  # ``package.module:function``
                        WithJsonSchema({"type": "string", "pattern": FUNCTION_REF_PATTERN})]
