"""Turning pydantic validation errors into one-line, user-facing config problems.

Pydantic's error locations include internals users never wrote (union tags such as
``api_key`` or the inner ``cast`` of a short form); :func:`user_path` walks the location against
the raw YAML data and keeps only the keys that are really there, so messages name what the user
typed and point at its line.  Unknown keys get a "did you mean" from the fields of the model that
rejected them.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from scheduler.errors import ConfigIssue

Locate = Callable[[tuple[Any, ...]], tuple[str | None, int | None]]


def suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def user_path(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """The part of a pydantic ``loc`` that exists in the user's data (plus a missing last key)."""
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
        elif last and isinstance(node, dict) and isinstance(part, str):
            kept.append(part)  # a missing or unknown key of this mapping
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


def _message(err: Any, path: tuple[Any, ...], model: type[BaseModel] | None) -> str:
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    kind = err["type"]
    if kind == "extra_forbidden" and path:
        options = fields_at(model, path[:-1]) if model is not None else []
        return f"unknown key '{path[-1]}'{suggest(str(path[-1]), options)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error" and "expected" in err.get("ctx", {}):
        return f"must be one of {err['ctx']['expected']}, got {err['input']!r}"
    return message


def translate(exc: ValidationError, raw: Any, locate: Locate, *, job: str | None = None,
              prefix: str | None = None, model: type[BaseModel] | None = None,
              skip: Callable[[tuple[Any, ...]], bool] | None = None) -> list[ConfigIssue]:
    """ConfigIssues for ``exc``; ``locate(path) -> (file, line)``; ``skip(path)`` drops follow-on errors."""
    issues: list[ConfigIssue] = []
    seen: set[tuple[Any, ...]] = set()
    for err in exc.errors():
        path = user_path(tuple(err["loc"]), raw)
        if skip is not None and skip(path):
            continue
        message = _message(err, path, model)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        file, line = locate(path)
        dotted = ".".join(str(p) for p in path) or None
        if prefix:
            dotted = f"{prefix}.{dotted}" if dotted else prefix
        issues.append(ConfigIssue(message, file=file, line=line, job=job, field=dotted))
    return issues
