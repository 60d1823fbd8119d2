"""Pages read by Arrow's JSON reader give exactly the batch the reference path builds from Python
records, or are declined: table-driven cases for each difference between the two readers, and
seeded random pages of every JSON shape a record field can take."""

from __future__ import annotations

import json
import random
from typing import Any

import pyarrow as pa
import pytest

from scheduler.kinds.ingest.columns import Batch, from_records
from scheduler.kinds.ingest.page_batch import NotExact, pages_to_batch
from scheduler.kinds.ingest.pages import PageReader
from scheduler.kinds.ingest.responses import parse_json


def _typed(values: list[Any]) -> list[tuple[type, Any]]:
    return [(type(v), repr(v)) for v in values]  # 1, 1.0 and True told apart; nan compares by repr


def assert_same(got: Batch, want: Batch) -> None:
    assert list(got.columns) == list(want.columns)
    for name, col in want.columns.items():
        mine = got.columns[name]
        assert mine.dtype == col.dtype, name
        if isinstance(col.data, list):
            assert isinstance(mine.data, list), name
            assert _typed(mine.data) == _typed(col.data), name
        else:
            assert isinstance(mine.data, pa.Array), name
            assert mine.data.type == col.data.type, name
            assert _typed(mine.data.to_pylist()) == _typed(col.data.to_pylist()), name
    assert got.index.tolist() == want.index.tolist()


def body(records: list[Any], key: str | None = "data", **extra: Any) -> bytes:
    doc = records if key is None else {key: records, **extra}
    return json.dumps(doc, separators=(",", ":")).encode()


def check(pages: list[bytes], key: str | None = "data", sep: str | None = "_", fast: bool = True) -> PageReader:
    """Read ``pages`` both ways and compare; ``fast``: the Arrow path must have taken them all."""
    reader = PageReader(key)
    read = [reader.read(p) for p in pages]
    records = [r for p in pages for r in (parse_json(p) if key is None else parse_json(p)[key])]
    want = from_records(records, sep)
    if fast:
        assert all(r is not None for r in read)
    if all(r is not None for r in read):
        try:
            got = pages_to_batch([r for r in read if r is not None], sep)
        except NotExact:
            assert not fast, "declined a batch it should read"
            return reader
        assert_same(got, want)
        for page, r in zip(pages, read, strict=True):
            assert r is not None
            if key is not None:
                assert r.body == {k: v for k, v in parse_json(page).items() if k != key}
            assert r.python_records() == (parse_json(page) if key is None else parse_json(page)[key])
    return reader


CASES: dict[str, tuple[list[list[dict[str, Any]]], bool]] = {
    "plain": ([[{"id": "a", "n": 1, "x": 1.5, "ok": True}, {"id": "b", "n": None, "x": None, "ok": False}]], True),
    "numbers and strings in one field": ([[{"q": 3}, {"q": "3"}, {"q": None}, {"q": "-4"}]], True),
    "strings first, then numbers": ([[{"q": "7"}, {"q": 8}]], True),
    "mixed on one page, numbers only on the next": ([[{"q": 1}, {"q": "2"}], [{"q": 3}, {"q": 4}]], True),
    "numbers on one page, strings on the next": ([[{"q": 1}], [{"q": "2"}]], True),
    "only nulls in a renamed field": ([[{"q": 1}, {"q": "2"}], [{"q": None}]], True),
    "floats beside strings": ([[{"q": 1.5}, {"q": "2"}]], False),
    "booleans beside numbers": ([[{"q": True}, {"q": 1}]], False),
    "timestamps stay text": ([[{"t": "2026-11-05T01:02:03Z", "d": "2026-11-05"}, {"t": "2026-11-05T04:05:06Z",
                                                                                   "d": "2026-11-06"}]], True),
    "timestamp-like text beside numbers": ([[{"t": "2026-11-05"}, {"t": 5}]], True),
    "ints then floats": ([[{"x": 1}, {"x": 2.5}], [{"x": 3}]], True),
    "15 digits with nulls": ([[{"x": 10**14 + 1}, {"x": None}]], True),
    "beyond 2**53 (16 digits)": ([[{"x": 2**55 + 1}, {"x": 0.5}]], False),
    "19 digits within int64": ([[{"x": 2**60}, {"x": None}]], True),
    "beyond int64": ([[{"x": 2**64}]], False),
    "fields in a varying order": ([[{"a": 1, "b": 2}, {"c": 3, "a": 4}], [{"d": 5, "b": 6}]], True),
    "missing and null keys": ([[{"a": 1}, {"b": None}, {}]], True),
    "nested objects": ([[{"c": {"e": "x", "s": None}}, {"c": {"e": "y"}}, {"c": None}]], True),
    "nested objects with new keys on a later page": ([[{"c": {"e": "x"}}], [{"c": {"e": "y", "s": "z"}}]], True),
    "nested timestamps": ([[{"c": {"at": "2026-11-05T00:00:00Z"}}]], True),
    "lists (Arrow misreads some: apache/arrow#51305)": ([[{"tags": ["a", "b"]}, {"tags": []}, {"tags": None}]],
                                                        False),
    "unicode and escapes": ([[{"s": "é😀\"\\\n\u0001", "k\u00e9y": "v"}]], True),
    "empty page": ([[]], True),
    "nested field mixing types": ([[{"c": {"q": 1}}, {"c": {"q": "1"}}]], False),
    "a mixed record field's name inside an object": ([[{"q": 1, "c": {"q": "x"}}, {"q": "2", "c": {"q": "y"}}]],
                                                     False),
    "a timestamp field's name inside an object": ([[{"t": "2026-11-05", "c": {"t": "2026-11-06"}}]], True),
    "an object beside text": ([[{"c": {"q": 1}}, {"c": "x"}]], False),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("sep", ["_", None])
def test_arrow_pages_match_the_reference_batch(case: str, sep: str | None) -> None:
    pages, fast = CASES[case]
    check([body(p, total_pages=len(pages), generated_at="2026-11-05T00:00:00Z") for p in pages], sep=sep,
          fast=fast)


@pytest.mark.parametrize("key", ["data", None])
def test_a_body_that_is_the_list_and_one_under_a_key(key: str | None) -> None:
    check([body([{"q": 1}, {"q": "2"}, {"t": "2026-11-05"}], key=key)], key=key)


def test_a_key_the_rewrite_cannot_reach_declines_the_page() -> None:
    reader = PageReader("data")
    reader.prefixed.add("t")  # learnt from an earlier page
    page = b'{"data":[{"t":"2026-11-05"},{"\\u0074":"2026-11-06"}]}'  # the second key written escaped
    assert reader.read(body([{"t": "2026-11-05"}])) is not None
    assert reader.read(page) is None
    assert reader.read(b'{"data":[{"\\u0074":"2026-11-06"}]}') is None  # read as a time, not as text


def test_spaced_json_is_rewritten_too() -> None:
    pages = [json.dumps({"data": [{"q": 1, "t": "2026-11-05"}, {"q": "2", "t": "2026-11-06"}]}).encode(),
             json.dumps({"data": [{"q": 3}]}, indent=2).encode()]
    check(pages)


@pytest.mark.parametrize("page", [
    b'{"data":[{"a":1,"a":2}]}',  # a repeated key: Python keeps the last, Arrow refuses
    b'{"data":[{"a":1}]} {"data":[]}',  # two JSON values: Python refuses
    b'{"data":[{"a":NaN}]}',  # Python reads NaN, Arrow does not
    b'{"data":[1,2]}',  # records that are not objects
    b'{"data":null}',
    b'{"data":[{"a":"\\u0074"},{"a":1}],"x":{"q":[1,"1"]}}',  # a mixed list outside the records
    b'{"data":[{"q\\u0041":"1"},{"qA":2}]}',  # a key written with an escape: not rewritten
    b'{"data":[{"a":12345678901234567890123}]}',
])
def test_odd_pages_are_declined_or_read_alike(page: bytes) -> None:
    reader = PageReader("data")
    read = reader.read(page)
    if read is None:
        return  # the reference path reads it (or names its error)
    want = from_records(parse_json(page)["data"], "_")
    assert_same(pages_to_batch([read], "_"), want)


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(["none", "int", "bigint", "float", "str", "date", "bool", "obj", "list"]
                      if depth < 2 else ["none", "int", "str", "date"])
    if kind == "none":
        return None
    if kind == "int":
        return rng.randint(-5, 5)
    if kind == "bigint":
        return rng.choice([2**53 + 1, -(2**62), 2**63 - 1])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e300, 3.0])
    if kind == "str":
        return rng.choice(["", "x", "3", "-0", "Ç", "a\"b", "1e5"])
    if kind == "date":
        return rng.choice(["2026-11-05", "2026-11-05T01:02:03Z", "2026-13-45"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "obj":
        return {k: _value(rng, depth + 1) for k in rng.sample(["a", "b", "c"], rng.randint(0, 3))}
    return [_value(rng, depth + 1) for _ in range(rng.randint(0, 2))]


def _field_value(rng: random.Random, style: str, constant: Any) -> Any:
    if rng.random() < 0.1:
        return None
    if style == "same":
        return constant
    if style == "mixed":
        return rng.choice([rng.randint(-9, 9), str(rng.randint(-9, 9))])
    if style == "numeric":
        return rng.choice([rng.randint(-9, 9), rng.randint(-9, 9), 0.5, 10**14 + 3])
    if style == "text":
        return rng.choice(["", "x", "3", "2026-11-05", "2026-11-05T01:02:03Z", "Ç\"\\"])
    if style == "object":
        # child names that may also be record fields (p, q): rewrites of one must not reach the other
        return {k: _field_value(rng, "numeric" if k == "a" else "text", None)
                for k in rng.sample(["a", "p", "q"], rng.randint(0, 3))}
    return _value(rng)


@pytest.mark.parametrize("seed", range(100))
def test_random_pages_match_or_are_declined(seed: int) -> None:
    rng = random.Random(seed)
    styles = ["same", "mixed", "numeric", "text", "object", "any"]
    fields = {name: rng.choices(styles, weights=[3, 2, 3, 3, 2, 1])[0] for name in rng.sample("pqrstuvw", 5)}
    constants = {name: _value(rng) for name in fields}
    pages = []
    for _ in range(rng.randint(1, 4)):
        records = [{name: _field_value(rng, fields[name], constants[name])
                    for name in rng.sample(list(fields), rng.randint(0, len(fields)))}
                   for _ in range(rng.randint(0, 12))]
        pages.append(body(records, total_pages=3))
    check(pages, sep=rng.choice(["_", None]), fast=False)



@pytest.mark.parametrize("seed", range(200))
def test_pages_switching_between_two_shapes_match_or_are_declined(seed: int) -> None:
    """The reader works its schema checks out once per schema: pages of one run that go back and
    forth between two record shapes (so between schemas, each seen again after the other) read as
    the reference path does, records under a key or the body a list."""
    rng = random.Random(seed)
    styles = ["same", "mixed", "numeric", "text", "object", "any"]
    shapes = []
    for _ in range(2):
        fields = {name: rng.choices(styles, weights=[3, 2, 3, 3, 2, 1])[0] for name in rng.sample("pqrstuvw", 5)}
        shapes.append((fields, {name: _value(rng) for name in fields}))
    key = rng.choice(["data", None])
    pages = []
    for _ in range(rng.randint(2, 6)):
        fields, constants = shapes[rng.randrange(2)]
        records = [{name: _field_value(rng, fields[name], constants[name])
                    for name in rng.sample(list(fields), rng.randint(0, len(fields)))}
                   for _ in range(rng.randint(0, 8))]
        pages.append(body(records, key=key, total_pages=3) if key is not None else body(records, key=None))
    check(pages, key=key, sep=rng.choice(["_", None]), fast=False)

def test_the_reader_learns_a_field_once() -> None:
    pages = [body([{"q": 1, "t": "2026-11-05"}, {"q": "2", "t": "2026-11-06"}]) for _ in range(3)]
    reader = check(pages)
    assert reader.renamed == {"q"} and reader.prefixed == {"t"}
