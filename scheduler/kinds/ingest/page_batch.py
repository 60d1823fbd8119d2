"""The pages of one batch as one :class:`~scheduler.kinds.ingest.columns.Batch`: the batch
:func:`~scheduler.kinds.ingest.columns.from_records` builds from their records, or :class:`NotExact`.

Each field's per-page arrays are combined as Arrow's inference over all the batch's values would
type them (nulls take the others' type, integers beside floats become floats, objects take the
union of their fields); a field of numbers on some pages and strings on others (or both, split by
the reader) becomes the mixed object column of the reference path.  Anything else is declined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from scheduler.kinds.ingest.columns import Batch, Column, add_column
from scheduler.kinds.ingest.pages import ArrowPage, Split


class NotExact(Exception):
    """The pages cannot be combined exactly as the reference path combines their records."""


def pages_to_batch(pages: Sequence[ArrowPage], flatten_sep: str | None) -> Batch:
    """The batch :func:`~scheduler.kinds.ingest.columns.from_records` builds from the pages'
    records, or :class:`NotExact`."""
    total = sum(p.rows for p in pages)
    order: dict[str, None] = {}
    for page in pages:
        order.update(dict.fromkeys(page.columns))
    columns: dict[str, Column] = {}
    for name in order:
        parts = [(p.columns.get(name), p.rows) for p in pages if p.rows]
        _merge_into(columns, name, parts, flatten_sep)
    return Batch(columns, np.arange(total))


def _merge_into(columns: dict[str, Column], name: str, parts: list[tuple[pa.Array | Split | None, int]],
                sep: str | None) -> None:
    kinds = {p.type for p, _ in parts if isinstance(p, pa.Array) and not pa.types.is_null(p.type)}
    if any(isinstance(p, Split) for p, _ in parts) or kinds == {pa.int64(), pa.string()}:
        if not kinds <= {pa.int64(), pa.string()}:
            raise NotExact(f"field {name!r} mixes strings with {sorted(map(str, kinds))}")
        numbers = unify([p.numbers if isinstance(p, Split) else p if _is(p, pa.int64()) else pa.nulls(n)
                         for p, n in parts])
        texts = unify([p.texts if isinstance(p, Split) else p if _is(p, pa.string()) else pa.nulls(n)
                       for p, n in parts])
        columns[name] = Column.mixed(numbers.cast(pa.int64()), texts.cast(pa.string()))
        return
    add_column(columns, name, unify([p if isinstance(p, pa.Array) else pa.nulls(n) for p, n in parts]), sep)


def _is(part: pa.Array | Split | None, kind: pa.DataType) -> bool:
    return isinstance(part, pa.Array) and part.type == kind


def unify(arrays: list[pa.Array]) -> pa.Array:
    """The arrays as one, typed as Arrow's inference over all their values types it: nulls take
    the others' type, integers beside floats become floats, objects take the union of their
    fields (in order of first appearance); any other difference is :class:`NotExact`."""
    kinds = list(dict.fromkeys(a.type for a in arrays if not pa.types.is_null(a.type)))
    if not kinds:
        kind = pa.null()
    elif len(kinds) == 1:
        kind = kinds[0]
    elif set(kinds) <= {pa.int64(), pa.float64()}:
        kind = pa.float64()
    elif all(pa.types.is_struct(k) for k in kinds):
        return _unify_structs(arrays)
    else:
        raise NotExact(f"{kinds[0]} beside {kinds[1]}")
    try:
        parts = [pa.nulls(len(a), kind) if pa.types.is_null(a.type) else a if a.type == kind else a.cast(kind)
                 for a in arrays]
    except pa.ArrowInvalid:
        raise NotExact(f"{kinds} do not combine exactly") from None
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def _unify_structs(arrays: list[pa.Array]) -> pa.Array:
    names = list(dict.fromkeys(f.name for a in arrays if pa.types.is_struct(a.type) for f in a.type))
    children = []
    for name in names:
        children.append(unify([a.field(name) if pa.types.is_struct(a.type) and a.type.get_field_index(name) >= 0
                               else pa.nulls(len(a)) for a in arrays]))
    missing = pa.concat_arrays([a.is_null() for a in arrays])
    return pa.StructArray.from_arrays(children, names=names, mask=missing)
