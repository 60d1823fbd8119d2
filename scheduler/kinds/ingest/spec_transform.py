"""The ``transform:`` step models of an ingest job (one key per step)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Tag, field_validator

from scheduler.config.types import FunctionRef, Model, TimezoneName
from scheduler.kinds.ingest.expr import ExpressionError, parse_expression
from scheduler.kinds.ingest.spec_common import _type_name

# --- transform ----------------------------------------------------------------------------------


class CastSpec(Model):
    """A cast target with options: timestamps take ``format`` and ``timezone`` (for naive values)."""

    type: str
    format: str | None = None
    timezone: TimezoneName | None = None
    true_values: tuple[str, ...] = ("true", "t", "yes", "y", "1")
    false_values: tuple[str, ...] = ("false", "f", "no", "n", "0")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _type_name(value)


class FlattenStep(Model):
    """Nested objects become columns: ``customer.email`` -> ``customer_email``."""

    flatten: bool | dict[str, str] = True

    def separator(self) -> str:
        return self.flatten.get("separator", "_") if isinstance(self.flatten, dict) else "_"


class RenameStep(Model):
    rename: dict[str, str]


class SelectStep(Model):
    select: tuple[str, ...]


class CastStep(Model):
    cast: dict[str, CastSpec]

    @field_validator("cast", mode="before", json_schema_input_type=dict[str, Union[str, CastSpec]])
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


class ParseNumberStep(Model):
    """Strip currency symbols, spaces and thousands separators, then parse a number."""

    parse_number: tuple[str, ...]


class LowerStep(Model):
    lower: tuple[str, ...]


class UpperStep(Model):
    upper: tuple[str, ...]


class StripStep(Model):
    strip: tuple[str, ...]


class DedupeSpec(Model):
    """Keep one row per ``columns`` value: the first or last in arrival order, or ordered by ``by``.

    (Not called ``key``: values of keys named key/token/password/secret are redacted from logs.)
    """

    columns: tuple[str, ...]
    keep: Literal["first", "last"] = "first"
    by: str | None = None

    @field_validator("columns", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DedupeStep(Model):
    dedupe: DedupeSpec


def _check_expr(value: str) -> str:
    try:
        parse_expression(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value


class DeriveStep(Model):
    """New columns from safe arithmetic expressions over columns and literals."""

    derive: dict[str, str]

    @field_validator("derive")
    @classmethod
    def _exprs(cls, value: dict[str, str]) -> dict[str, str]:
        for expr in value.values():
            _check_expr(expr)
        return value


class FilterSpec(Model):
    """Keep rows where ``expr`` is true; the others are rejected (or counted as filtered)."""

    expr: str
    on_fail: Literal["reject", "drop"] = "reject"

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        return _check_expr(value)


class FilterStep(Model):
    filter: FilterSpec

    @field_validator("filter", mode="before", json_schema_input_type=Union[str, FilterSpec])
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"expr": value} if isinstance(value, str) else value


class HookStep(Model):
    """``module:function`` taking a DataFrame and returning a DataFrame (or ``(clean, rejects)``)."""

    hook: FunctionRef


_STEPS: dict[str, type[Model]] = {
    "flatten": FlattenStep, "rename": RenameStep, "select": SelectStep, "cast": CastStep,
    "parse_number": ParseNumberStep, "lower": LowerStep, "upper": UpperStep, "strip": StripStep,
    "dedupe": DedupeStep, "derive": DeriveStep, "filter": FilterStep, "hook": HookStep,
}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        name = next(iter(value))
        return name if name in _STEPS else None
    if isinstance(value, Model):
        return next(iter(type(value).model_fields))
    return None


Step = Annotated[
    Union[tuple(Annotated[model, Tag(name)] for name, model in _STEPS.items())],  # type: ignore[misc]
    Discriminator(
        _step_tag,
        custom_error_type="transform_step",
        custom_error_message="each step is a mapping with one key: " + ", ".join(_STEPS),
    ),
]
