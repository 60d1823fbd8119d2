"""Turning pydantic validation errors into one-line, user-facing config problems.

Pydantic's error locations include internals users never wrote (union tags such as
``api_key`` or the inner ``cast`` of a short form); :func:`user_path` walks the location against
the raw YAML data and keeps only the keys that are really there, so messages name what the user
typed and point at its line.  Unknown keys get a "did you mean" from the fields of the model that
rejected them.

Wording: :func:`wording` is the one place that turns a pydantic error into the product's words
(``must be at most 100``, ``expected a list, got text``); no library phrasing reaches a user.
Type errors say what was given by its YAML type, never by value, so a mistyped secret is not
echoed.  Errors of the branches of one union become one line (``expected 'all', an integer or a
list``).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from scheduler.errors import ConfigIssue

Locate = Callable[[tuple[Any, ...]], tuple[str | None, int | None]]


def suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def user_path(loc: tuple[Any, ...], raw: Any, missing: bool = True) -> tuple[Any, ...]:
    """The part of a pydantic ``loc`` that exists in the user's data (plus, if ``missing``, an absent last key)."""
    kept: list[Any] = []
    node = raw
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            kept.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            kept.append(part)
            node = node[part]
        elif missing and last and isinstance(node, dict) and isinstance(part, str):
            kept.append(part)  # a missing key of this mapping (not a union branch's name)
    return tuple(kept)


def _expand(tp: Any) -> list[Any]:
    """Unwrap Annotated / Optional / Union into the concrete types they allow."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _expand(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(tp) for t in _expand(arg)]
    return [tp]


def _step(tp: Any, part: Any) -> list[Any]:
    out: list[Any] = []
    for t in _expand(tp):
        origin = get_origin(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            field = t.model_fields.get(part) if isinstance(part, str) else None
            if field is None and isinstance(part, str):
                field = next((f for f in t.model_fields.values() if f.alias == part), None)
            if field is not None:
                out.append(field.annotation)
        elif origin in (list, tuple) and isinstance(part, int):
            out.extend(a for a in get_args(t) if a is not Ellipsis)
        elif origin is dict and isinstance(part, str):
            out.append(get_args(t)[1])
    return out


def fields_at(model: type[BaseModel], path: Sequence[Any]) -> list[str]:
    """Key names allowed at ``path`` inside ``model`` (all variants of unions merged)."""
    candidates: list[Any] = [model]
    for part in path:
        candidates = [nxt for c in candidates for nxt in _step(c, part)]
    names: list[str] = []
    for c in candidates:
        for t in _expand(c):
            if isinstance(t, type) and issubclass(t, BaseModel):
                names.extend(f.alias or n for n, f in t.model_fields.items())
    return names


def discriminator_tags(model: type[BaseModel] | None, path: Sequence[Any], key: str) -> list[str]:
    """The values the discriminator ``key`` may take in the union at ``path`` (for a hint)."""
    if model is None:
        return []
    candidates: list[Any] = [model]
    for part in path:
        candidates = [nxt for c in candidates for nxt in _step(c, part)]
    tags: list[str] = []
    for c in candidates:
        for t in _expand(c):
            field = t.model_fields.get(key) if isinstance(t, type) and issubclass(t, BaseModel) else None
            if field is not None and get_origin(field.annotation) is Literal:
                tags.extend(str(v) for v in get_args(field.annotation))
    return tags


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def given(value: Any) -> str:
    """What the user wrote, by YAML type only (values may be secrets)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# What an error type says was expected, as a noun phrase ("expected a list").
EXPECTED: dict[str, str] = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean (true/false)",
    "bool_parsing": "a boolean (true/false)",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "nothing (null)",
}

# Constraint errors: ``ctx`` of pydantic's error -> our sentence.
BOUNDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than_equal": lambda ctx: f"must be at least {_number(ctx['ge'])}",
    "less_than_equal": lambda ctx: f"must be at most {_number(ctx['le'])}",
    "greater_than": lambda ctx: f"must be greater than {_number(ctx['gt'])}",
    "less_than": lambda ctx: f"must be less than {_number(ctx['lt'])}",
    "too_short": lambda ctx: ("must not be empty" if ctx["min_length"] == 1
                              else f"must have at least {ctx['min_length']} entries"),
    "too_long": lambda ctx: f"must have at most {ctx['max_length']} entries",
    "string_too_short": lambda ctx: ("must not be empty" if ctx["min_length"] == 1
                                     else f"must be at least {ctx['min_length']} characters long"),
    "string_too_long": lambda ctx: f"must be at most {ctx['max_length']} characters long",
    "int_from_float": lambda ctx: "must be a whole number",
    "multiple_of": lambda ctx: f"must be a multiple of {_number(ctx['multiple_of'])}",
}

_LIBRARY_PREFIXES = ("Value error, ", "Assertion failed, ")


def wording(err: Mapping[str, Any], path: tuple[Any, ...] = (), model: type[BaseModel] | None = None) -> str:
    """The product's sentence for one pydantic error (``err`` as from ``ValidationError.errors()``).

    ``path`` is the user's key path (for "did you mean" and discriminator hints).  Every error type
    our models can raise is mapped here; anything else is rephrased without library wording.
    """
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        message = str(err["msg"])
        for prefix in _LIBRARY_PREFIXES:
            message = message.removeprefix(prefix)
        return message
    if kind == "extra_forbidden" and path:
        options = fields_at(model, path[:-1]) if model is not None else []
        return f"unknown key '{path[-1]}'{suggest(str(path[-1]), options)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}, got {err['input']!r}"
    if kind == "union_tag_invalid":
        return f"must be one of {_join(str(ctx['expected_tags']).split(', '))}, got {ctx['tag']!r}"
    if kind == "union_tag_not_found":
        tags = discriminator_tags(model, path[:-1], str(path[-1])) if path else []
        return "required key is missing" + (f" (one of {', '.join(tags)})" if tags else "")
    if kind in EXPECTED:
        return f"expected {EXPECTED[kind]}, got {given(err.get('input'))}"
    if kind in BOUNDS:
        return BOUNDS[kind](ctx)
    message = str(err["msg"])  # a custom error type of ours (e.g. transform_step) or an unmapped one
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return message


def _join(nouns: list[str]) -> str:
    return nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " or " + nouns[-1]


def _union_nouns(errors: list[Mapping[str, Any]]) -> list[str] | None:
    """What each branch of a union expected, when every branch failed on the type alone."""
    nouns: list[str] = []
    for err in errors:
        if err["type"] in EXPECTED:
            noun = EXPECTED[err["type"]]
        elif err["type"] == "literal_error":
            noun = str((err.get("ctx") or {}).get("expected", ""))
        else:
            return None
        if noun and noun not in nouns:
            nouns.append(noun)
    return nouns


def translate(exc: ValidationError, raw: Any, locate: Locate, *, job: str | None = None,
              prefix: str | None = None, model: type[BaseModel] | None = None,
              skip: Callable[[tuple[Any, ...]], bool] | None = None) -> list[ConfigIssue]:
    """ConfigIssues for ``exc``; ``locate(path) -> (file, line)``; ``skip(path)`` drops follow-on errors."""
    grouped: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = user_path(loc, raw, missing=err["type"] == "missing")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, str(err["ctx"]["discriminator"]).strip("'"))  # point at the 'type:' key
        if skip is not None and skip(path):
            continue
        grouped.setdefault(path, []).append(err)
    issues: list[ConfigIssue] = []
    for path, errors in grouped.items():
        nouns = _union_nouns(errors) if len(errors) > 1 else None
        if nouns:
            messages = [f"expected {_join(nouns)}, got {given(errors[0].get('input'))}"]
        else:
            messages = list(dict.fromkeys(wording(err, path, model) for err in errors))
        file, line = locate(path)
        dotted = ".".join(str(p) for p in path) or None
        if prefix:
            dotted = f"{prefix}.{dotted}" if dotted else prefix
        issues.extend(ConfigIssue(message, file=file, line=line, job=job, field=dotted) for message in messages)
    return issues
