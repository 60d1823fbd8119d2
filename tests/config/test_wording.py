"""Every pydantic error type we map gets our wording, produced from real pydantic errors.

Each row validates a value against a field type, checks pydantic raised the error type the row
names, and pins the one line the user reads.  The table must cover every type the mapping in
``scheduler.config.issues`` knows, so a new mapping cannot go untested.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from scheduler.config.issues import BOUNDS, EXPECTED, translate


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"


class FromAttributes(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str = "x"


class Cat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["cat"]


class Dog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["dog"]


Pet = Annotated[Cat | Dog, Field(discriminator="type")]

# (pydantic error type, field type, value written, the line users read)
ROWS: list[tuple[str, Any, Any, str]] = [
    ("string_type", str, 5, "expected a string, got a number"),
    ("int_type", int, [1], "expected an integer, got a list"),
    ("int_parsing", int, "three", "expected an integer, got text"),
    ("float_type", float, {"a": 1}, "expected a number, got a mapping"),
    ("float_parsing", float, "abc", "expected a number, got text"),
    ("bool_type", bool, [True], "expected a boolean (true/false), got a list"),
    ("bool_parsing", bool, "maybe", "expected a boolean (true/false), got text"),
    ("list_type", list[int], 5, "expected a list, got a number"),
    ("tuple_type", tuple[int, ...], "a", "expected a list, got text"),
    ("set_type", set[int], True, "expected a list, got true/false"),
    ("dict_type", dict[str, int], ["a"], "expected a mapping, got a list"),
    ("model_type", Inner, "x", "expected a mapping, got text"),
    ("model_attributes_type", FromAttributes, 5, "expected a mapping, got a number"),
    ("none_required", None, 5, "expected nothing (null), got a number"),
    ("greater_than_equal", Annotated[int, Field(ge=0)], -1, "must be at least 0"),
    ("less_than_equal", Annotated[int, Field(le=100)], 101, "must be at most 100"),
    ("greater_than", Annotated[float, Field(gt=0)], 0, "must be greater than 0"),
    ("less_than", Annotated[float, Field(lt=1.5)], 2, "must be less than 1.5"),
    ("too_short", Annotated[dict[str, str], Field(min_length=1)], {}, "must not be empty"),
    ("too_long", Annotated[list[int], Field(max_length=2)], [1, 2, 3], "must have at most 2 entries"),
    ("string_too_short", Annotated[str, Field(min_length=3)], "ab", "must be at least 3 characters long"),
    ("string_too_long", Annotated[str, Field(max_length=2)], "abc", "must be at most 2 characters long"),
    ("int_from_float", int, 2.5, "must be a whole number"),
    ("multiple_of", Annotated[int, Field(multiple_of=5)], 7, "must be a multiple of 5"),
    ("literal_error", Literal["a", "b"], "c", "must be one of 'a' or 'b', got 'c'"),
    ("missing", int, ..., "required key is missing"),
    ("union_tag_invalid", Pet, {"type": "cow"}, "must be one of 'cat' or 'dog', got 'cow'"),
    ("union_tag_not_found", Pet, {}, "required key is missing (one of cat, dog)"),
    ("value_error", Annotated[int, Field()], "hook", "our own sentence"),
    ("extra_forbidden", Inner, {"nmae": "x"}, "unknown key 'nmae' (did you mean 'name'?)"),
]


def _messages(annotation: Any, value: Any, error_type: str) -> tuple[list[str], list[str]]:
    """(pydantic error types, our lines) for ``{"x": value}`` against a one-field model."""
    validators = {}
    if error_type == "value_error":
        def _own(cls: Any, v: Any) -> Any:
            raise ValueError("our own sentence")
        validators["_own"] = field_validator("x", mode="before")(_own)
    model = create_model("Row", __config__=ConfigDict(extra="forbid"), __validators__=validators,  # type: ignore[call-overload]
                         x=(annotation, ...))
    raw = {} if value is ... else {"x": value}
    with pytest.raises(ValidationError) as caught:
        model.model_validate(raw)
    issues = translate(caught.value, raw, lambda path: (None, None), model=model)
    return [e["type"] for e in caught.value.errors()], [issue.message for issue in issues]


@pytest.mark.parametrize("error_type, annotation, value, expected", ROWS, ids=[r[0] for r in ROWS])
def test_error_type_is_worded_in_product_language(error_type: str, annotation: Any, value: Any, expected: str) -> None:
    types, messages = _messages(annotation, value, error_type)
    assert types == [error_type]
    assert messages == [expected]


def test_table_covers_every_mapped_error_type() -> None:
    assert set(EXPECTED) | set(BOUNDS) <= {row[0] for row in ROWS}


def test_branches_of_a_union_become_one_line() -> None:
    types, messages = _messages(Literal["all"] | int | tuple[str, ...] | None, {"x": 1}, "union")
    assert len(types) > 1
    assert messages == ["expected 'all', an integer or a list, got a mapping"]


def test_a_mistyped_secret_is_not_echoed() -> None:
    _, messages = _messages(str, 123456789012, "string_type")
    assert messages == ["expected a string, got a number"]
    assert "123456789012" not in messages[0]
