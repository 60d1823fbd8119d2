"""The ``transform:`` step models of an ingest job (one key per step)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from scheduler.config.types import FunctionRef, Model, TimezoneName
from scheduler.kinds.ingest.expr import ExpressionError, parse_expression
from scheduler.kinds.ingest.spec_common import _type_name

# --- transform ----------------------------------------------------------------------------------


class CastSpec(Model):
    """A cast target with options: timestamps take ``format`` and ``timezone`` (for naive values)."""

    type: str = Field(description="int, float, decimal(p,s), string, bool, timestamp or date.")
    format: str | None = Field(
        default=None, description="Timestamp format: strptime, unix or unix_ms (default ISO-8601).")
    timezone: TimezoneName | None = Field(default=None, description="Timezone of timestamps without an offset.")
    true_values: tuple[str, ...] = Field(default=("true", "t", "yes", "y", "1"), description="Strings read as true.")
    false_values: tuple[str, ...] = Field(default=("false", "f", "no", "n", "0"), description="Strings read as false.")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _type_name(value)


class FlattenStep(Model):
    """Nested objects become columns: ``customer.email`` -> ``customer_email``."""

    flatten: bool | dict[str, str] = Field(
        default=True, description="Nested objects become columns (true, or {separator: _}).")

    def separator(self) -> str:
        return self.flatten.get("separator", "_") if isinstance(self.flatten, dict) else "_"


class RenameStep(Model):
    rename: dict[str, str] = Field(description="Rename columns: {old: new}.")


class SelectStep(Model):
    select: tuple[str, ...] = Field(description="Keep and order these columns.")


class CastStep(Model):
    cast: dict[str, CastSpec] = Field(
        description="Explicit types: {col: TYPE} or {col: {type, format, timezone, true_values, false_values}}.")

    @field_validator("cast", mode="before", json_schema_input_type=dict[str, str | CastSpec])
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


class ParseNumberStep(Model):
    """Strip currency symbols, spaces and thousands separators, then parse a number."""

    parse_number: tuple[str, ...] = Field(
        description="Columns to parse as numbers out of text like \"$12.50\" or \"1,200\".")


class LowerStep(Model):
    lower: tuple[str, ...] = Field(description="Columns to lower-case.")


class UpperStep(Model):
    upper: tuple[str, ...] = Field(description="Columns to upper-case.")


class StripStep(Model):
    strip: tuple[str, ...] = Field(description="Columns to strip of surrounding whitespace.")


class DedupeSpec(Model):
    """Keep one row per ``columns`` value: the first or last in arrival order, or ordered by ``by``.

    (Not called ``key``: values of keys named key/token/password/secret are redacted from logs.)
    """

    columns: tuple[str, ...] = Field(description="Key column(s).")
    keep: Literal["first", "last"] = Field(default="first", description="Keep the first or the last row per key.")
    by: str | None = Field(default=None, description="Order rows by this column instead of arrival.")

    @field_validator("columns", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DedupeStep(Model):
    dedupe: DedupeSpec = Field(description="One row per key.")


def _check_expr(value: str) -> str:
    try:
        parse_expression(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value


class DeriveStep(Model):
    """New columns from safe arithmetic expressions over columns and literals."""

    derive: dict[str, str] = Field(description="New columns from safe arithmetic expressions: {col: expr}.")

    @field_validator("derive")
    @classmethod
    def _exprs(cls, value: dict[str, str]) -> dict[str, str]:
        for expr in value.values():
            _check_expr(expr)
        return value


class FilterSpec(Model):
    """Keep rows where ``expr`` is true; the others are rejected (or counted as filtered)."""

    expr: str = Field(description="Keep rows where this expression is true.")
    on_fail: Literal["reject", "drop"] = Field(
        default="reject", description="The other rows go to rejects (reject) or are counted as filtered (drop).")

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        return _check_expr(value)


class FilterStep(Model):
    filter: FilterSpec = Field(description="An expression, or {expr, on_fail}.")

    @field_validator("filter", mode="before", json_schema_input_type=str | FilterSpec)
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"expr": value} if isinstance(value, str) else value


class HookStep(Model):
    """``module:function`` taking a DataFrame and returning a DataFrame (or ``(clean, rejects)``)."""

    hook: FunctionRef = Field(
        description="package.module:function taking and returning a DataFrame (or (clean, rejects)).")


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


# Spelled out (in the order of _STEPS) so type checkers see the union; each tag is the step's one key.
Step = Annotated[
    Annotated[FlattenStep, Tag("flatten")] | Annotated[RenameStep, Tag("rename")]
    | Annotated[SelectStep, Tag("select")] | Annotated[CastStep, Tag("cast")]
    | Annotated[ParseNumberStep, Tag("parse_number")] | Annotated[LowerStep, Tag("lower")]
    | Annotated[UpperStep, Tag("upper")] | Annotated[StripStep, Tag("strip")]
    | Annotated[DedupeStep, Tag("dedupe")] | Annotated[DeriveStep, Tag("derive")]
    | Annotated[FilterStep, Tag("filter")] | Annotated[HookStep, Tag("hook")],
    Discriminator(
        _step_tag,
        custom_error_type="transform_step",
        custom_error_message="each step is a mapping with one key: " + ", ".join(_STEPS),
    ),
]
