"""Field-by-field validation of a mapping that failed as a whole.

When one key of a job is wrong, pydantic gives no model at all, yet the checks that run after it
(cron syntax, ``after:`` references, container allowlists) only need a few other keys.
:func:`valid_fields` validates each wanted key on its own, with the same type, constraints and
field validators as the real model, so those checks still run and every problem is reported in
one pass.  Model-level validators (which read several keys at once) are not part of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cache
from types import MethodType
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator

T = TypeVar("T")


@cache
def _fields_only(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional and without its model validators."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (annotation, Field(default=None, alias=info.alias))
    validators = {
        dec.cls_var_name: field_validator(*dec.info.fields, mode=dec.info.mode)(_function(dec.func))
        for dec in model.__pydantic_decorators__.field_validators.values()
    }
    return create_model(f"{model.__name__}Fields", __config__=model.model_config,
                        __validators__=validators, **fields)


def _function(validator: Callable[..., Any]) -> Callable[..., Any]:
    """The plain function under a field validator: pydantic keeps each one bound to its model (a classmethod)."""
    assert isinstance(validator, MethodType), validator
    return validator.__func__


def valid_fields(model: type[BaseModel], data: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The fields among ``names`` that ``data`` gives and that are valid on their own, validated.

    A field missing from ``data`` or invalid is left out; the result never holds a raw value.
    """
    loose = _fields_only(model)
    out: dict[str, Any] = {}
    for name in names:
        key = model.model_fields[name].alias or name
        if key not in data:
            continue
        try:
            out[name] = getattr(loose.model_validate({key: data[key]}), name)
        except ValidationError:
            continue
    return out


class _Reads:
    """A stand-in for a model instance that records which fields a validator reads."""

    def __init__(self, model: type[BaseModel], values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> Any:
        if name in self._model.model_fields:
            self.read.add(name)
            if name not in self._values:
                raise _Unknown(name)
            return self._values[name]
        attr = getattr(self._model, name)
        if isinstance(attr, property) and attr.fget is not None:
            return attr.fget(self)  # e.g. a derived view such as ``data_target``
        if callable(attr):
            return attr.__get__(self, self._model) if hasattr(attr, "__get__") else attr
        return attr


class _Unknown(Exception):
    """A validator read a field whose value is unknown (invalid, or required and missing)."""


def known_values(model: type[BaseModel], data: Mapping[str, Any],
                 names: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields (among ``names``, default all) whose value is known: the default of each absent
    optional field, and each given field that is valid on its own.  Invalid ones are left out."""
    wanted = set(model.model_fields if names is None else names)
    present = {name for name, info in model.model_fields.items() if (info.alias or name) in data}
    values: dict[str, Any] = {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if name in wanted and name not in present and not info.is_required()
    }
    values.update(valid_fields(model, data, present & wanted))
    return values


def on_known(check: Callable[..., list[T]], *inputs: tuple[type[BaseModel], Mapping[str, Any]]) -> list[T]:
    """``check`` run on stand-ins of model instances holding the known ``values``; ``[]`` when it
    reads a field whose value is unknown (that field's own problem is reported already)."""
    try:
        return check(*(_Reads(model, values) for model, values in inputs))
    except _Unknown:
        return []


def model_checks(model: type[BaseModel], data: Mapping[str, Any]) -> list[str]:
    """Messages of ``model``'s after-validators that can be decided although ``data`` is invalid.

    Pydantic skips a model's own validators as soon as one field fails.  Here each one runs on the
    fields that are valid on their own (defaults for absent ones); a validator that reads a field
    whose value is unknown is skipped, so no message depends on a value that was rejected.
    """
    values = known_values(model, data)
    messages: list[str] = []
    for dec in model.__pydantic_decorators__.model_validators.values():
        if dec.info.mode != "after":
            continue
        view = _Reads(model, values)
        try:
            dec.func(view)
        except _Unknown:
            continue
        except (ValueError, AssertionError) as exc:
            messages.append(str(exc))
    return messages
