"""The config file's JSON Schema (``scheduler schema``), derived from the loader's own models.

What must hold: the schema accepts a file exactly when the loader would, as far as one file can
tell.  Descriptions, types, bounds, enums and defaults come from the models (``Field(description=
...)`` is the one source of every key's text); the rest mirrors what the loader does before the
models see the data:

- ``${VAR}`` / ``${VAR:-default}`` in any value: a number, boolean, enum or patterned value may
  also be a string that contains a variable (its value is only known at load time);
- ``KEY_file: PATH`` stands for ``KEY`` (read from the file) wherever ``KEY`` takes a scalar, and
  giving both is an error;
- ``defaults`` takes every key some job kind has, each valid for every kind that has it;
- a top-level section may be empty (``null``);
- a job's required keys (``kind``, ``image`` ...) may come from ``defaults:``; the schema sees
  the ``defaults`` of the same file only, so in a directory config keep ``defaults:`` beside the
  jobs that rely on it, or an editor flags them.

Known limits, by nature of JSON Schema: cron syntax, timezone names, cross-field rules (``command``
or ``shell``), ``after:`` references and a quoted number where a number is expected are checked by
the loader only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from scheduler.config.durations import format_duration
from scheduler.config.loader import JOB_MODELS, SECTIONS

REF = "#/$defs/{model}"
# A string the loader expands: contains ${NAME} or ${NAME:-default} not escaped as $${...}.
INTERPOLATED: dict[str, Any] = {
    "type": "string",
    "pattern": r"(?:^|[^$])(?:\$\$)*\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}",
    "description": "a value read from the environment when the config is loaded",
}
_SCALARS = {"string", "integer", "number", "boolean"}


class _Generate(GenerateJsonSchema):
    """Defaults in the config's own notation: ``90s``, not ISO-8601 ``PT1M30S``."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def _model_schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(model).json_schema(ref_template=REF, schema_generator=_Generate)
    defs.update(schema.pop("$defs", {}))
    return schema


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = defs[node["$ref"].removeprefix("#/$defs/")]
    return node


def _types(node: Any, defs: dict[str, Any], seen: frozenset[int] = frozenset()) -> set[str]:
    """JSON types a value of ``node`` may have (following refs and unions)."""
    node = _resolve(node, defs)
    if not isinstance(node, dict) or id(node) in seen:
        return set()
    seen = seen | {id(node)}
    found: set[str] = set()
    kind = node.get("type")
    found.update([kind] if isinstance(kind, str) else kind or [])
    for key in ("const", "enum"):
        if key in node:
            found.update("string" if isinstance(v, str) else "number" for v in
                         (node[key] if key == "enum" else [node[key]]))
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in node.get(key, []):
            found |= _types(sub, defs, seen)
    return found


def _is_checked_scalar(node: dict[str, Any]) -> bool:
    """A scalar a literal ``${VAR}`` string would fail: not a plain, unconstrained string."""
    if "enum" in node or "pattern" in node:
        return True
    return node.get("type") in ("integer", "number", "boolean")


_SUBSCHEMA = ("additionalProperties", "items", "not", "if", "then", "else")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_ANNOTATIONS = ("description", "default", "title")  # stay on the key, outside the union


def _allow_interpolation(node: Any) -> Any:
    """Let every checked scalar (number, boolean, enum, pattern) also be a ``${VAR}`` string.

    Discriminator constants (``kind``, ``type``) stay literal: they pick the variant.
    """
    if not isinstance(node, dict):
        return node
    if _is_checked_scalar(node) and "const" not in node:
        meta = {k: v for k, v in node.items() if k in _ANNOTATIONS}
        value = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
        return {**meta, "anyOf": [value, {"$ref": "#/$defs/Interpolated"}]}
    out = dict(node)
    if "anyOf" in node and any(isinstance(sub, dict) and _is_checked_scalar(sub) for sub in node["anyOf"]):
        # A union with a checked scalar branch (a duration: pattern or number): one more branch.
        out["anyOf"] = [*node["anyOf"], {"$ref": "#/$defs/Interpolated"}]
        return out
    for key in _SUBSCHEMA:
        if isinstance(node.get(key), dict):
            out[key] = _allow_interpolation(node[key])
    for key in _SUBSCHEMA_LISTS:
        if key in node:
            out[key] = [_allow_interpolation(sub) for sub in node[key]]
    for key in _SUBSCHEMA_MAPS:
        if key in node:
            out[key] = {name: _allow_interpolation(sub) for name, sub in node[key].items()}
    return out


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every object schema with named properties in ``node``."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("properties"), dict):
        yield node
    for key in _SUBSCHEMA:
        yield from _objects(node.get(key))
    for key in _SUBSCHEMA_LISTS:
        for sub in node.get(key, []):
            yield from _objects(sub)
    for key in _SUBSCHEMA_MAPS:
        for sub in node.get(key, {}).values():
            yield from _objects(sub)


def _allow_file_keys(defs: dict[str, Any]) -> None:
    """``KEY_file: PATH`` beside every ``KEY`` that takes a scalar; never both."""
    for obj in [o for sub in defs.values() for o in _objects(sub)]:
        exclusive = []
        for name, sub in list(obj["properties"].items()):
            if name.endswith("_file") or not _types(sub, defs) & _SCALARS:
                continue
            obj["properties"][f"{name}_file"] = {
                "type": "string",
                "description": f"Path of a file holding '{name}' (read at load time, trimmed, masked in logs)."}
            exclusive.append({"not": {"required": [name, f"{name}_file"]}})
        if exclusive:
            obj.setdefault("allOf", []).extend(exclusive)


def _defaults_schema(defs: dict[str, Any]) -> dict[str, Any]:
    """Every key some kind has; a value must suit every kind that has the key (as the loader checks)."""
    per_key: dict[str, list[Any]] = {}
    for model in JOB_MODELS.values():
        for name, sub in defs[model.__name__]["properties"].items():
            if name != "kind" and sub not in per_key.setdefault(name, []):
                per_key[name].append(copy.deepcopy(sub))
    properties = {name: subs[0] if len(subs) == 1 else {"allOf": subs} for name, subs in per_key.items()}
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "description": "Keys merged into every job that has them (the job's own value wins; "
                           "env and params merge key by key)."}


def _required_from_defaults(defs: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's required keys, unless this file's ``defaults:`` gives them (``kind`` always in the job)."""
    rules = []
    by_key: dict[str, list[str]] = {}
    for kind, model in JOB_MODELS.items():
        required = defs[model.__name__]["required"]
        for key in [k for k in required if k != "kind"]:
            by_key.setdefault(key, []).append(kind)
            required.remove(key)
    for key, kinds in by_key.items():
        need = {"allOf": [{"if": {"required": ["kind"], "properties": {"kind": {"const": kind}}},
                           "then": {"anyOf": [{"required": [key]}, {"required": [f"{key}_file"]}]}}
                          for kind in kinds]}
        defaults_give = {"required": ["defaults"], "properties": {"defaults": {
            "type": "object", "anyOf": [{"required": [key]}, {"required": [f"{key}_file"]}]}}}
        rules.append({"if": {"not": defaults_give},
                      "then": {"properties": {"jobs": {"additionalProperties": need}}}})
    return rules


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [node, {"type": "null"}]}


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors (yaml-language-server) and ``scheduler schema``."""
    defs: dict[str, Any] = {}
    for model in JOB_MODELS.values():
        defs[model.__name__] = _model_schema(model, defs)
    for section in SECTIONS.values():
        defs[section.__name__] = _model_schema(section, defs)
    defs = {name: _allow_interpolation(sub) for name, sub in defs.items()}
    defs["Defaults"] = _defaults_schema(defs)
    defs["Interpolated"] = copy.deepcopy(INTERPOLATED)
    _allow_file_keys(defs)
    required_rules = _required_from_defaults(defs)
    properties: dict[str, Any] = {
        "defaults": _nullable({"$ref": "#/$defs/Defaults"}),
        "jobs": {
            "type": ["object", "null"], "description": "Job name -> job spec; 'kind' says which.",
            "additionalProperties": {"oneOf": [{"$ref": REF.format(model=m.__name__)} for m in JOB_MODELS.values()]},
        },
    }
    for name, section in SECTIONS.items():
        properties[name] = _nullable({"$ref": REF.format(model=section.__name__)})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cron-container-scheduler config",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "allOf": required_rules,
        "$defs": defs,
    }
