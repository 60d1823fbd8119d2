"""Shared field types for config models: strict frozen base model, durations, timezones.

Every config model derives from :class:`Model`, so unknown keys are errors and specs are immutable
once loaded.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
)

from scheduler.config.durations import format_duration, parse_duration

__all__ = ["Duration", "FunctionRef", "Model", "TimezoneName", "format_duration", "parse_duration"]

_FUNCTION_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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


DurationInput = Union[str, int, float]  # what users may write: "10m", 90 (seconds)
Duration = Annotated[timedelta, BeforeValidator(parse_duration, json_schema_input_type=DurationInput),
                     PlainSerializer(format_duration, return_type=str)]
TimezoneName = Annotated[str, BeforeValidator(_check_timezone)]


def _check_function_ref(value: str) -> str:
    if not _FUNCTION_REF.match(value):
        raise ValueError(f"must look like 'package.module:function', got {value!r}")
    return value


FunctionRef = Annotated[str, AfterValidator(_check_function_ref)]  # ``package.module:function``
