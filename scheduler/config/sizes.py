"""Sizes as users write them (``512m``, ``2g``, ``64MiB``, bytes), in binary units as Docker reads them.

The grammar is written once, as :data:`SIZE_PATTERN`: the parser matches it and the JSON Schema
publishes it (ASCII only, no flags, so Python and an editor's ECMAScript engine agree).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

SIZE_PATTERN = r"^ *([0-9]+(?:\.[0-9]+)?) *([bBkKmMgGtT]?)([iI]?[bB])? *$"
_SIZE = re.compile(SIZE_PATTERN)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: Any) -> int:
    """``"512m"``, ``"2g"``, ``"64MiB"``, ``1048576`` -> bytes (binary units, as Docker reads them)."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 512m or 2g")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        result = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"invalid size {value!r}: use bytes or a number with k, m, g (like 512m)")
    if result <= 0:
        raise ValueError("must be positive")
    return result


def format_size(size: int) -> str:
    """Inverse of :func:`parse_size`: the largest unit that divides exactly (``67108864`` -> ``64m``)."""
    for unit, factor in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str),
                 WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1},
                                           {"type": "string", "pattern": SIZE_PATTERN}]})]
