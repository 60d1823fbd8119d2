"""Page bodies read straight into Arrow columns, where that gives exactly what the Python path gives.

The reference path parses a page into Python objects (:func:`~scheduler.kinds.ingest.http.parse_json`)
and builds a batch from the records (:func:`~scheduler.kinds.ingest.columns.from_records`).  Here
Arrow's JSON reader parses the page in C, without the GIL, and
:func:`~scheduler.kinds.ingest.page_batch.pages_to_batch` builds the same batch from the pages of
a batch.  Where the reader would read a value differently, a page or a batch is declined
(``read`` returns None, ``NotExact`` is raised) and the caller takes the reference path from the
page's bytes.  This module imports no pandas: the fetch thread reads pages with it while the
rest of a run is still importing.

What the reader does differently, and how each is met:

- A string that looks like a date or time becomes a timestamp.  String values of such a field
  are written with one extra leading character (:data:`PREFIX`, inserted into the bytes after
  ``"name":"``), so they stay strings, and the character is cut off again after reading.
- A field whose values mix numbers and strings (``3`` beside ``"3"``) is an error.  Its string
  values are renamed in the bytes (``"name":"`` -> ``"name<SUFFIX>":"``) so they land in a
  column of their own; the two halves become the one mixed column (``dtype`` object, the same
  Python values) the reference path builds, carrying both halves (``Column.parts``) for kernels.
- Integers beyond 64 bits become doubles, and integers beyond 2**53 (or ``-0``) beside floats
  are rounded into a float column (the reference path keeps them as Python ints): a page read
  with a float column and a run of 16 or more digits, or an integer ``-0``, is declined.
- A list that starts with null is misread (apache/arrow#51305): pages with any list but the
  records' own are declined.  Objects nested in objects more than 64 levels deep (counting the
  body and the records' list) are declined too: a page's columns cross a pipe pickled, and
  pickling recurses per level.  Very deep nesting overflows the reader's stack: pages whose
  brackets may nest deeper than the calling thread's stack holds (256 in a thread, 4,096 in a
  main thread with a stack of 8 MB or more) are declined before reading.
- A key given twice in one object, several JSON values in one body, and other oddities: any
  reader error declines the page, and the reference path reads it or names the error.

The rewrites match ``"name":"`` (or ``"name": "``), which is a key followed by a string value
when the quote before the name opens the key; it may also close an earlier string (the key
``a\"name``), and a key may be written with escapes or other spacing.  So each rewrite is
counted (the bytes it added) against the string values read under its name, and any difference
declines the page.  The rewrite set is learnt per run, from the reader's own errors and types,
so a run pays a second read only when it meets a new field.
"""

from __future__ import annotations

import re
import resource
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from scheduler.kinds.ingest.responses import parse_json

PREFIX = "\x01"
SUFFIX = "\x00s"
_PREFIX_JSON = b"\\u0001"
_SUFFIX_JSON = b"\\u0000s"
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 16  # 2**53 has 16 digits: beyond it, an int beside floats is no float to Python
_MAX_BLOCK = 2**31 - 2
_WRAPPED = "r"
_CHANGED = re.compile(r"Column\((/[^)]*)\) changed from (number|string) to (number|string)")
_MAX_LEARN = 32  # rewrites learnt per page before it is declined


@dataclass
class Split:
    """The two halves of a field that mixes numbers and strings: each null where the other holds the value."""

    numbers: pa.Array
    texts: pa.Array


@dataclass
class ArrowPage:
    """One page read by Arrow: its ``rows`` records as columns in order of first appearance, the
    body without its records (as the reference parser gives it, for pagination), and the bytes
    (None where they stay in the fetch process: see :mod:`~scheduler.kinds.ingest.page_bytes`)."""

    content: bytes | None
    rows: int
    columns: dict[str, pa.Array | Split]
    body: Any
    records_path: str | None

    def python_records(self) -> list[Any]:
        """The records as the reference path reads them (for a batch :func:`pages_to_batch` declines)."""
        if self.content is None:
            raise RuntimeError("a page's bytes stayed in the fetch process, but its batch needs them")
        body = parse_json(self.content)
        return body if self.records_path is None else list(body[self.records_path])

    def kinds(self) -> tuple[tuple[str, Any], ...]:
        """Each column's name and Arrow type (a split field's two types): pages of equal kinds
        always combine into one batch, since :func:`pages_to_batch` declines only where types differ."""
        return tuple((name, (column.numbers.type, column.texts.type) if isinstance(column, Split) else column.type)
                     for name, column in self.columns.items())


@dataclass
class _SchemaFacts:
    """What the checks of a page read from its schema alone; a run's pages mostly share one schema,
    so these are worked out once per schema, not per page."""

    too_nested: bool
    nested_lists: bool
    has_floats: bool
    time_names: tuple[str, ...]
    string_paths: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)  # by name, filled on demand


@dataclass
class PageReader:
    """Reads the pages of one run; ``records`` is the top-level key of the records (None: the body
    is the list of records).  Keeps what it learnt about the run's fields between pages."""

    records: str | None
    prefixed: set[str] = field(default_factory=set)
    renamed: set[str] = field(default_factory=set)
    _known: tuple[pa.Schema, _SchemaFacts] | None = field(default=None, repr=False)

    @property
    def _key(self) -> str:
        """The top-level column of the records (a list body is wrapped under :data:`_WRAPPED`)."""
        return _WRAPPED if self.records is None else self.records

    @property
    def usable(self) -> bool:
        """Records at the top level only (a dotted path is left to the reference path)."""
        return self.records is None or "." not in self.records

    def read(self, content: bytes) -> ArrowPage | None:
        """The page as Arrow columns, or None where only the reference path reads it exactly."""
        if not self.usable or len(content) + 16 > _MAX_BLOCK or _too_deep(content, _depth_limit()):
            return None
        try:
            return self._read(content)
        except RecursionError:  # a deeply nested page: the reference path reads it (or says why not)
            return None

    def _read(self, content: bytes) -> ArrowPage | None:
        # only a key's colon can be followed by a space outside strings; a spaced page is told by its
        # first keys (one spaced further on is caught by the count of what the rewrites reached)
        spaced = content.find(b'": ', 0, 4096) >= 0
        for _ in range(_MAX_LEARN):
            try:
                text, reached = self._rewrite(content, spaced)
                table = self._parse(text)
            except pa.ArrowInvalid as exc:
                if not self._learn_mixed(str(exc)):
                    return None
                continue
            except (pa.ArrowException, UnicodeDecodeError, ValueError):
                return None
            if table.num_rows != 1 or (self.records is None and table.column_names != [_WRAPPED]):
                return None  # several JSON values, or a list body that was no JSON: the reference path's error
            facts = self._facts(table.schema)
            if facts.too_nested:
                return None  # objects in objects beyond what a page's columns can be pickled with
            if facts.nested_lists:
                return None  # lists other than the records': Arrow misreads some (apache/arrow#51305)
            if facts.has_floats and (_LONG_DIGIT_RUN in content.translate(_DIGITS_TO_ZERO)
                                     or _MINUS_ZERO.search(content)):
                return None  # a float column that may hold a rounded big integer, or -0 read as -0.0
            # a renamed field's text half read as times: the rename and the prefix go together
            stamps = {n[: -len(SUFFIX)] if n.endswith(SUFFIX) and n[: -len(SUFFIX)] in self.renamed else n
                      for n in facts.time_names}
            if stamps & self.prefixed or any(SUFFIX in name for name in stamps):
                return None  # a value the rewrite did not reach (a key written another way)
            if stamps:
                self.prefixed |= stamps
                continue
            if not self._rewrites_took(table, reached, facts):
                return None
            return self._page(content, table)
        return None

    def _facts(self, schema: pa.Schema) -> _SchemaFacts:
        """The schema's facts, kept for the next page with an equal schema."""
        if self._known is not None and self._known[0].equals(schema):
            return self._known[1]
        if _type_depth(schema) > _MAX_TYPE_DEPTH:  # the other facts' walks recurse: none are needed
            facts = _SchemaFacts(True, False, False, ())
        else:
            facts = _SchemaFacts(False, _nested_lists(schema, self._key), _has_floats(schema),
                                 tuple(_timestamp_names(schema)))
        self._known = (schema, facts)
        return facts

    def _rewrites_took(self, table: pa.Table, reached: dict[str, int], facts: _SchemaFacts) -> bool:
        """Whether each rewrite reached exactly the values read under its name: as many string
        values under the (renamed) name as the pattern was rewritten in the page.  A key that
        merely ends like the pattern (``"a\\"t":"``), one written with escapes or other spacing, or
        a real key named like a renamed one makes the counts differ."""
        for name, count in reached.items():
            read_name = name + SUFFIX if name in self.renamed else name
            paths = facts.string_paths.get(read_name)
            if paths is None:
                paths = facts.string_paths[read_name] = _string_paths(table.schema, read_name)
            if count != sum(_strings_at(table, path) for path in paths):
                return False
        return True

    def _rewrite(self, content: bytes, spaced: bool) -> tuple[bytes, dict[str, int]]:
        """The page with the learnt rewrites made, and how many values each reached."""
        reached: dict[str, int] = {}
        for name in sorted(self.prefixed | self.renamed):
            key = _json_key(name)
            target = key + (_SUFFIX_JSON if name in self.renamed else b"")
            lead = _PREFIX_JSON if name in self.prefixed else b""
            before = len(content)
            content = _replace(content, b'"' + key + b'":"', b'"' + target + b'":"' + lead)
            if spaced:
                content = _replace(content, b'"' + key + b'": "', b'"' + target + b'": "' + lead)
            reached[name] = (len(content) - before) // (len(target) + len(lead) - len(key))  # bytes added each
        if self.records is None:
            content = b'{"' + _WRAPPED.encode() + b'":' + content + b"}"
        return content, reached

    @staticmethod
    def _parse(text: bytes) -> pa.Table:
        # The whole page is one block.  The streaming reader parses it in this thread; ``read_json``
        # starts a read-ahead thread per call and waits for it, which costs a scheduling delay per
        # page when the other core is busy (about a quarter of the parse time here).
        options = pj.ReadOptions(use_threads=False, block_size=max(len(text) + 1, 1 << 16))
        reader = pj.open_json(pa.BufferReader(text), read_options=options,
                              parse_options=pj.ParseOptions(newlines_in_values=True))
        return reader.read_all()

    def _learn_mixed(self, message: str) -> bool:
        """Learn a record field that mixes numbers and strings from the reader's error; False when
        the error is anything else (or about a field already renamed)."""
        found = _CHANGED.search(message)
        if found is None or found.group(2) == found.group(3):
            return False
        steps = found.group(1).split("/")
        if len(steps) != 4 or steps[1] != self._key or steps[2] != "[]" or not steps[3] or steps[3] in self.renamed:
            return False
        self.renamed.add(steps[3])
        return True

    def _page(self, content: bytes, table: pa.Table) -> ArrowPage | None:
        key = self._key
        if key not in table.column_names:
            return None
        records = table.column(key).chunk(0) if table.column(key).num_chunks else None
        if records is None or records.null_count or not pa.types.is_list(records.type):
            return None
        values = _list_values(records)
        if pa.types.is_null(values.type) and len(values) == 0:
            columns: dict[str, pa.Array | Split] = {}
        elif pa.types.is_struct(values.type) and values.null_count == 0:
            if any(_suffixed(f.type) for f in values.type):
                return None  # a string renamed inside a nested object: only record fields are split
            restored = self._columns(values)
            if restored is None:
                return None
            columns = restored
        else:
            return None  # records that are not all objects: the reference path names the error
        body: Any = None
        if self.records is not None:
            rest = table.drop_columns([key]).to_pylist()[0]
            body = _restore_body(rest, self.prefixed, self.renamed)
            if body is None:
                return None
        return ArrowPage(content, len(values), columns, body, self.records)

    def _columns(self, records: pa.StructArray) -> dict[str, pa.Array | Split] | None:
        fields = records.flatten()
        out: dict[str, pa.Array | Split] = {}
        read_as = self.prefixed | {n + SUFFIX for n in self.prefixed}  # a renamed text half is read so
        for fld, array in zip(records.type, fields, strict=True):
            array = _unprefix(array, fld.name, read_as)
            if array is None:
                return None
            name = fld.name
            if name.endswith(SUFFIX) and name[: -len(SUFFIX)] in self.renamed:
                base = name[: -len(SUFFIX)]
                if not pa.types.is_string(array.type):
                    return None
                known = out.get(base)
                if isinstance(known, Split):
                    return None
                numbers = known if known is not None else pa.nulls(len(array))
                out[base] = Split(numbers, array)  # keeps the position of whichever came first
                continue
            if name in self.renamed and name in out:  # the text half came first
                split = out[name]
                if not isinstance(split, Split):
                    return None
                split.numbers = array
                continue
            if SUFFIX in name:
                return None
            out[name] = array
        for name, value in out.items():
            if isinstance(value, Split):
                if not (pa.types.is_int64(value.numbers.type) or pa.types.is_null(value.numbers.type)):
                    return None  # floats beside strings: 3 and 3.0 are told apart only in Python
                if (_validity(value.numbers) & _validity(value.texts)).any():
                    return None  # a record holding both halves: a repeated key, whose last value Python keeps
                if value.numbers.null_count == len(value.numbers) == value.texts.null_count:
                    out[name] = pa.nulls(len(value.texts))  # only nulls: the reference reads a null column
                elif value.numbers.null_count == len(value.numbers):
                    out[name] = value.texts  # no number on this page
                elif value.texts.null_count == len(value.texts):
                    out[name] = value.numbers
        return out


def _json_key(name: str) -> bytes:
    """``name`` as it is written between the quotes of a plain JSON key."""
    import json

    return json.dumps(name, ensure_ascii=False)[1:-1].encode()


def _replace(content: bytes, old: bytes, new: bytes) -> bytes:
    """``content.replace(old, new)``, the same bytes: split and join take a third less time than
    ``bytes.replace`` on a page (whose search runs twice, once to count and once to copy)."""
    return new.join(content.split(old))


def _has_floats(schema: Iterable[pa.Field]) -> bool:
    for fld in schema:
        kind = fld.type
        if pa.types.is_floating(kind):
            return True
        if pa.types.is_struct(kind) and _has_floats(kind):
            return True
        if _is_list(kind) and _has_floats([kind.value_field]):
            return True
    return False


_MINUS_ZERO = re.compile(rb"[:\[,]\s*-0(?![.0-9eE])")
# Brackets open at once, counted on the bytes: deeper pages take the reference path.  Arrow's
# reader takes up to about 500 bytes of stack a level (it overflows a 1 MB stack between 2,000 and
# 4,000 levels): a thread's stack may be small, a main thread's is the process's stack limit.
_DEPTH_LIMIT = 256
_MAIN_DEPTH_LIMIT = 4096  # at most 2 MB of a main thread's stack of 8 MB or more
_MAIN_STACK = 8 << 20
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_OPEN_OBJECT, _OPEN_LIST = ord("{"), ord("[")


def _depth_limit() -> int:
    """The nesting the calling thread's stack holds with room to spare."""
    if threading.current_thread() is not threading.main_thread():
        return _DEPTH_LIMIT
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return _MAIN_DEPTH_LIMIT if soft == resource.RLIM_INFINITY or soft >= _MAIN_STACK else _DEPTH_LIMIT


def _too_deep(content: bytes, limit: int) -> bool:
    """Whether the page may nest deeper than ``limit`` (Arrow's reader overflows the stack on very
    deep nesting).  Brackets inside strings count too, so this may say yes too often.  A page with
    no more opening brackets than ``limit`` cannot nest deeper (counted at a quarter of the cost of
    following the depth)."""
    raw = np.frombuffer(content, dtype=np.uint8)
    if np.count_nonzero(raw == _OPEN_OBJECT) + np.count_nonzero(raw == _OPEN_LIST) <= limit:
        return False
    brackets = np.frombuffer(content.translate(None, _BRACKETS), dtype=np.uint8)
    steps = np.where((brackets == _OPEN_LIST) | (brackets == _OPEN_OBJECT), 1, -1)
    return bool(np.cumsum(steps).max() > limit)


# Types nested in types (the body, the records' list, objects in objects): a page's columns cross
# the fetch process's pipe pickled, and pickling an Arrow array recurses per level (about 165
# levels fit Python's recursion limit), so deeper pages take the reference path in either mode.
_MAX_TYPE_DEPTH = 64


def _type_depth(schema: pa.Schema) -> int:
    """How deep the schema's types nest (a top-level scalar field is 1), walked without recursion."""
    deepest = 0
    waiting: list[tuple[pa.DataType, int]] = [(fld.type, 1) for fld in schema]
    while waiting:
        kind, depth = waiting.pop()
        deepest = max(deepest, depth)
        if _is_list(kind):
            waiting.append((kind.value_type, depth + 1))
        elif pa.types.is_struct(kind):
            waiting += [(fld.type, depth + 1) for fld in kind]
    return deepest


def _nested_lists(schema: pa.Schema, records: str) -> bool:
    """Whether any list sits anywhere but as the records' own list (of objects)."""
    for fld in schema:
        kind = fld.type
        if fld.name == records and _is_list(kind):
            kind = kind.value_type
        if _has_list(kind):
            return True
    return False


def _has_list(kind: pa.DataType) -> bool:
    if _is_list(kind):
        return True
    return pa.types.is_struct(kind) and any(_has_list(f.type) for f in kind)


def _string_paths(fields: Iterable[pa.Field], name: str, at: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Where the string fields called ``name`` are, at any depth of objects (lists are declined
    before this is asked), the records' list included: each as the field positions from the top."""
    paths: list[tuple[int, ...]] = []
    for position, fld in enumerate(fields):
        kind = fld.type.value_type if _is_list(fld.type) else fld.type
        if fld.name == name and pa.types.is_string(kind):
            paths.append((*at, position))
        if pa.types.is_struct(kind):
            paths += _string_paths(list(kind), name, (*at, position))
    return paths


def _strings_at(table: pa.Table, path: tuple[int, ...]) -> int:
    """Non-null values of the field at ``path`` (from :func:`_string_paths`), a list's values
    counted one by one."""
    column = table.column(path[0])
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # a one-row table
    for position in path[1:]:
        if _is_list(array.type):
            array = _list_values(array)
        array = array.field(position)  # the child as stored, parent nulls not merged in
    if _is_list(array.type):
        array = _list_values(array)
    return int(len(array) - array.null_count)


def _suffixed(kind: pa.DataType) -> bool:
    """Whether a field nested in an object carries the rename suffix (records hold no lists here)."""
    return pa.types.is_struct(kind) and any(SUFFIX in f.name or _suffixed(f.type) for f in kind)


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _is_time(kind: pa.DataType) -> bool:
    return bool(pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind))


def _timestamp_names(schema: Iterable[pa.Field]) -> Iterable[str]:
    """Names of the object fields (at any depth) read as times."""
    for fld in schema:
        if _is_time(fld.type):
            yield fld.name
        elif pa.types.is_struct(fld.type):
            yield from _timestamp_names(fld.type)
        elif _is_list(fld.type) and pa.types.is_struct(fld.type.value_type):  # the records' own list
            yield from _timestamp_names(fld.type.value_type)


def _unprefix(array: pa.Array, name: str, prefixed: set[str]) -> pa.Array | None:
    """``array`` with the prefix cut from the strings of every field in it named in ``prefixed``
    (at any struct depth; pages with lists in their records are declined before); None when a
    value lacks the prefix."""
    kind = array.type
    if pa.types.is_string(kind) and name in prefixed:
        import pyarrow.compute as pc  # only pages with such a field: a fetch process starts 40 ms sooner

        present = array.drop_null()
        if len(present) and not pc.all(pc.starts_with(present, PREFIX)).as_py():
            return None
        return pc.utf8_slice_codeunits(array, 1)
    if pa.types.is_struct(kind):
        children = []
        changed = False
        for fld, child in zip(kind, _children(array), strict=True):
            restored = _unprefix(child, fld.name, prefixed)
            if restored is None:
                return None
            changed |= restored is not child
            children.append(restored)
        if not changed:
            return array
        return pa.StructArray.from_arrays(children, fields=list(kind), mask=array.is_null())
    return array


def _list_values(array: pa.ListArray | pa.LargeListArray) -> pa.Array:
    """``array.flatten()``: its lists' values in order, without the kernel (which imports
    ``pyarrow.compute``) unless a list is null (its slot may still hold values)."""
    if array.null_count:
        return array.flatten()
    offsets = array.offsets
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return array.values.slice(start, end - start)


def _validity(array: pa.Array) -> np.ndarray:
    """Whether each row of ``array`` holds a value, read from its validity bitmap (no compute
    kernel: the fetch process reads pages without importing ``pyarrow.compute``)."""
    if pa.types.is_null(array.type):
        return np.zeros(len(array), dtype=bool)
    bitmap = array.buffers()[0]
    if bitmap is None:
        return np.ones(len(array), dtype=bool)
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return bits[array.offset:array.offset + len(array)].astype(bool)


def _children(array: pa.StructArray) -> list[pa.Array]:
    """The struct's child arrays, sliced to the struct's rows (parent nulls not merged in)."""
    return [array.field(i) for i in range(array.type.num_fields)]


def _restore_body(value: Any, prefixed: set[str], renamed: set[str]) -> Any:
    """The body's Python values with rewrites undone (a body with lists is declined before); None
    when one cannot be (a value without the prefix)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key[: -len(SUFFIX)] if key.endswith(SUFFIX) and key[: -len(SUFFIX)] in renamed else key
            if isinstance(item, str) and name in prefixed:
                if not item.startswith(PREFIX):
                    return None
                item = item[1:]
            else:
                item = _restore_body(item, prefixed, renamed)
                if item is None and value[key] is not None:
                    return None
            if name in out and out[name] is not None:
                return None
            out[name] = item
        return out
    return value
