"""Edge cases of the Arrow page path against the reference path (``json.loads``, ``from_records``,
the pandas steps and writer): pages Arrow would read differently (each must be declined or read
alike), key digests that must not depend on the other keys of a batch, a batch's pandas view,
the batch writer, and nesting deep enough to crash Arrow's reader."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from test_ingest_pages import check

from scheduler.kinds.ingest import execute, prefetch
from scheduler.kinds.ingest.columns import Batch, from_records
from scheduler.kinds.ingest.keys import digests, text_digests
from scheduler.kinds.ingest.pages import PageReader, _depth_limit, _too_deep
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.responses import parse_json
from scheduler.kinds.ingest.sink import batch_table, to_table
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.kinds.ingest.transform import Transformer, records_to_frame


def _typed(value: Any) -> Any:
    """``value`` with every number tagged by its type (``1`` and ``1.0`` told apart)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, repr(value))


@pytest.mark.parametrize("sep", ["_", None])
def test_a_nested_field_named_like_a_renamed_field(sep: str | None) -> None:
    check([b'{"data":[{"q":1},{"q":"2"},{"c":{"q":"x"}}]}'], sep=sep, fast=False)


def test_a_key_ending_in_an_escaped_quote_and_a_prefixed_name() -> None:
    check([json.dumps({"data": [{"t": "2026-11-05", 'a"t': "v"}]}, separators=(",", ":")).encode()], fast=False)


@pytest.mark.parametrize("page", [
    json.dumps({"data": [{"é": "2026-11-05"}]}).encode(),  # json.dumps' default: the key written \u00e9
    b'{"data":[{"\\u0074":"2026-11-05"}]}',
    b'{"data":[{"t" : "2026-11-05T00:00:00Z"}]}',  # a space before the colon
    b'{"data":[{"t":  "2026-11-05T00:00:00Z"}]}',  # two spaces after it
    b'{"data":[{"t":\t"2026-11-05T00:00:00Z"}]}',
    b'{"data":[{"t":\n"2026-11-05T00:00:00Z"}]}',
], ids=["escaped-unicode-key", "escaped-ascii-key", "space-before-colon", "two-spaces", "tab", "newline"])
def test_a_timestamp_field_the_rewrite_misses(page: bytes) -> None:
    check([page], fast=False)


def test_a_missed_value_that_starts_with_the_prefix_character() -> None:
    check([b'{"data":[{"t":"2026-11-05"}]}', b'{"data":[{"\\u0074":"\\u0001x"}]}'], fast=False)


def test_a_key_named_like_the_suffix_marker() -> None:
    check([json.dumps({"data": [{"q": 1}, {"q": "2"}, {"q\u0000s": "x"}]}).encode()], fast=False)


def test_a_repeated_key_in_a_renamed_field() -> None:
    check([b'{"data":[{"q":1},{"q":"2"},{"q":"3","q":4}]}'], fast=False)


def test_integer_minus_zero_beside_floats() -> None:
    check([b'{"data":[{"a":0.5},{"a":-0}]}'], fast=False)


def test_a_list_body_that_is_not_json_is_declined() -> None:
    content = b'[{"a":1}],"x":[1]'
    with pytest.raises(ValueError):
        parse_json(content)
    assert PageReader(None).read(content) is None


def test_the_body_keeps_objects_in_a_list_as_written() -> None:
    content = b'{"data":[],"links":[{"rel":"next"},{"href":"x"}]}'
    read = PageReader("data").read(content)
    assert read is None or read.body == {"links": [{"rel": "next"}, {"href": "x"}]}


def test_the_body_keeps_integers_beside_floats() -> None:
    content = b'{"data":[],"xs":[1,2.5]}'
    read = PageReader("data").read(content)
    assert read is None or _typed(read.body) == _typed({"xs": [1, 2.5]})


def test_a_key_digest_does_not_depend_on_the_other_keys() -> None:
    alone = text_digests(pa.array(["abc"]))
    beside_a_long_key = text_digests(pa.array(["abc", "x" * 20]))
    assert alone[0] == beside_a_long_key[0]
    ints = digests(pa.table({"id": [7]}), ["id"])
    beside_a_long_int = digests(pa.table({"id": [7, 1234567890]}), ["id"])
    assert ints[0] == beside_a_long_int[0]


@pytest.mark.parametrize("keys", [
    ["ORD-0001", "ORD-0002", "ORD-0001"],  # one length: read as the rows of a matrix
    ["é€x", "abcde"],  # one length in bytes, not in characters
    ["a" * 8, "b" * 8],  # a whole word
    ["a" * 17, "b" * 17],  # three words, the last one byte
    ["", ""],
    [None, ""],  # a null is as long as the empty string
    ["k"],
])
def test_keys_of_one_length_digest_as_beside_a_longer_key(keys: list[str | None]) -> None:
    beside = text_digests(pa.array([*keys, "x" * 40]))[:-1]
    assert (text_digests(pa.array(keys, pa.string())) == beside).all()
    sliced = pa.array(["zz", *keys], pa.string()).slice(1)  # data that starts past the buffer's start
    assert (text_digests(sliced) == beside).all()


def _items(httpserver: HTTPServer, rows: list[dict[str, Any]]) -> None:
    """``rows`` served 100 a page (``?page=N``), then an empty page."""
    httpserver.clear()
    for page in range(len(rows) // 100 + 2):
        httpserver.expect_request("/items", query_string={"page": str(page + 1), "per_page": "100"}).respond_with_json(
            rows[page * 100:(page + 1) * 100])


def _two_batches() -> list[dict[str, Any]]:
    """Two batches of 100 rows: the first with a 20-character key, the second repeating key 'k1'."""
    first = [{"id": i, "v": f"k{i}"} for i in range(99)] + [{"id": 99, "v": "x" * 20}]
    return first + [{"id": 100, "v": "k1"}] + [{"id": i, "v": f"z{i}"} for i in range(101, 200)]


def _job(url: str, sink: dict[str, Any], transform: list[Any] | None = None) -> IngestJob:
    return IngestJob.model_validate({
        "kind": "ingest", "transform": transform or [],
        "source": {"base_url": url, "path": "/items", "pagination": {"type": "page_number", "page_size": 100}},
        "sink": {"dataset": "items", "schema": {"id": "int", "v": "string"}, **sink}})


def test_dedupe_across_batches_of_different_key_lengths(httpserver: HTTPServer, tmp_path: Path,
                                                        make_ctx: Callable[..., Any]) -> None:
    _items(httpserver, _two_batches())
    result = execute(_job(httpserver.url_for(""), {"batch_rows": 100}, [{"dedupe": {"columns": "v"}}]),
                     make_ctx(tmp_path))
    out = pq.read_table(tmp_path / "items" / "date=2026-11-05").to_pydict()
    assert len(out["v"]) == len(set(out["v"])) == 199
    assert result["rows_duplicate"] == 1


def test_merge_replaces_a_key_stored_beside_a_longer_key(httpserver: HTTPServer, tmp_path: Path,
                                                         make_ctx: Callable[..., Any]) -> None:
    sink = {"mode": "merge", "merge_key": "id"}
    _items(httpserver, [{"id": 5, "v": "a"}, {"id": 1234567890, "v": "a"}])
    execute(_job(httpserver.url_for(""), sink), make_ctx(tmp_path))
    _items(httpserver, [{"id": 5, "v": "b"}])
    execute(_job(httpserver.url_for(""), sink), make_ctx(tmp_path))
    out = pq.read_table(tmp_path / "items" / "date=2026-11-05").to_pylist()
    assert sorted((r["id"], r["v"]) for r in out) == [(5, "b"), (1234567890, "a")]


def test_unique_check_across_batches_of_different_key_lengths(httpserver: HTTPServer, tmp_path: Path,
                                                             make_ctx: Callable[..., Any]) -> None:
    _items(httpserver, _two_batches())
    job = _job(httpserver.url_for(""), {"batch_rows": 100})
    job = IngestJob.model_validate({**job.model_dump(mode="json", by_alias=True), "checks": {"unique": ["v"]}})
    with pytest.raises(IngestFailed, match="unique"):
        execute(job, make_ctx(tmp_path))


def test_a_row_subset_keeps_the_columns_dtype() -> None:
    batch = from_records([{"n": 1, "s": "x"}, {"n": None, "s": "y"}])
    assert batch.columns["n"].dtype == np.dtype("float64")
    assert batch.frame(np.array([0]))["n"].dtype == np.dtype("float64")
    assert batch.keep(np.array([True, False])).frame()["n"].dtype == np.dtype("float64")


def test_the_arrow_steps_give_the_pandas_steps_frame_after_a_filter() -> None:
    records = [{"id": 1, "n": 3}, {"id": 2, "n": None}, {"id": 3, "n": 4}]
    job = IngestJob.model_validate({
        "kind": "ingest", "source": {"base_url": "http://127.0.0.1:1", "path": "/x"},
        "transform": [{"filter": {"expr": "n > 0"}}], "sink": {"dataset": "d", "schema": {"id": "int"}}})
    arrow = Transformer(job.transform, lambda column, step: None)
    got = arrow.apply_batch(arrow.batch(records)).frame
    reference = Transformer(job.transform, lambda column, step: None)
    want = reference.apply(records_to_frame(records)).frame
    pd.testing.assert_frame_equal(got.frame() if isinstance(got, Batch) else got, want)


def _nested(depth: int) -> bytes:
    return b'{"data":[{"a":' + b"[" * depth + b"]" * depth + b"}]}"


def test_deeply_nested_lists_the_reference_reads() -> None:
    page = _nested(1000)
    parse_json(page)  # the reference path reads it
    read = PageReader("data").read(page)  # must decline or read it, not raise
    assert read is None or read.rows == 1


def test_very_deep_nesting_does_not_crash_the_reader(tmp_path: Path) -> None:
    code = ("import threading\n"
            "from scheduler.kinds.ingest.pages import PageReader\n"
            "page = b'{\"data\":[{\"a\":' + b'[' * 20000 + b']' * 20000 + b'}]}'\n"
            "def read():\n"
            "    try:\n"
            "        PageReader('data').read(page)\n"
            "    except RecursionError:\n"
            "        pass\n"
            "thread = threading.Thread(target=read)\n"  # as the fetch thread reads pages
            "thread.start()\n"
            "thread.join()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-500:]


def test_a_nan_beside_numbers_is_written_as_the_pandas_path_writes_it() -> None:
    records = [{"id": 1, "x": float("nan")}, {"id": 2, "x": 1.5}]  # a page json.loads reads (NaN), Arrow declines
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64())])
    assert batch_table(from_records(records), schema).equals(to_table(records_to_frame(records), schema))


@pytest.mark.parametrize("values", ["[null,1]", "[null,1.5]", "[null,false]", '[null,"x"]', "[null,null,2]"])
def test_a_list_that_starts_with_null(values: str) -> None:
    check([b'{"data":[{"id":1,"tags":' + values.encode() + b"}]}"], fast=False)


def test_a_reject_record_keeps_a_list_that_starts_with_null(httpserver: HTTPServer, tmp_path: Path,
                                                            make_ctx: Callable[..., Any]) -> None:
    httpserver.expect_request("/items").respond_with_data(
        b'[{"id":1,"v":"x","tags":[null,1]},{"id":2,"v":"y","tags":[3]}]', content_type="application/json")
    job = IngestJob.model_validate({
        "kind": "ingest", "source": {"base_url": httpserver.url_for(""), "path": "/items"},
        "transform": [{"filter": {"expr": "id > 1"}}, {"select": ["id", "v"]}],
        "sink": {"dataset": "items", "schema": {"id": "int", "v": "string"}}})
    result = execute(job, make_ctx(tmp_path))
    assert result["rows_rejected"] == 1
    record = pq.read_table(tmp_path / "items_rejects" / "date=2026-11-05").column("record").to_pylist()[0]
    assert json.loads(record)["tags"] == [None, 1]


@pytest.mark.parametrize("page", [
    b'{"data":[{"t":1},{"t":"x"}],"t":"2026-11-05T00:00:00Z"}',
    b'{"data":[{"t":1},{"t":"x"}],"meta":{"t":"2026-11-05T00:00:00Z"}}',
], ids=["top-level", "nested"])
def test_a_body_timestamp_named_like_a_renamed_field(page: bytes) -> None:
    check([page], fast=False)


def test_lists_that_start_with_null_on_two_pages() -> None:
    check([b'{"data":[{"t":[null,false]}]}', b'{"data":[{"t":[null,false]}]}'], fast=False)


def _objects(depth: int) -> bytes:
    return b'{"data":[{"a":' + b'{"b":' * depth + b"1" + b"}" * depth + b"}]}"


@pytest.mark.parametrize(("content", "limit", "deep"), [
    (_nested(10), 256, False),
    (_nested(300), 256, True),
    (_nested(300), 4096, False),
    (_objects(4093), 4096, False),  # the body, the records' list and a record: 3 levels, 4,093 more
    (_objects(4094), 4096, True),
    (b'{"data":[' + b",".join([b'{"c":{"d":[1]}}'] * 2000) + b"]}", 256, False),  # 6,001 opening brackets, 4 deep
    (b'{"data":[{"s":"' + b"[" * 300 + b'"}]}', 256, True),  # brackets in strings count too: decline too often
])
def test_nesting_is_measured_on_the_bytes(content: bytes, limit: int, deep: bool) -> None:
    assert _too_deep(content, limit) is deep


def test_a_thread_reads_less_deep_pages_than_a_main_thread() -> None:
    limits: list[int] = []
    thread = threading.Thread(target=lambda: limits.append(_depth_limit()))
    thread.start()
    thread.join()
    assert limits == [256]
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    big = soft == resource.RLIM_INFINITY or soft >= 8 << 20
    assert _depth_limit() == (4096 if big else 256)


@pytest.mark.parametrize("depth", [3000, 20000])
def test_deep_nesting_in_a_main_thread_does_not_crash_the_reader(depth: int) -> None:
    """A main thread (the fetch process's) reads 3,000 levels with Arrow and declines 20,000."""
    code = ("import resource\n"
            "from scheduler.kinds.ingest.pages import PageReader\n"
            "hard = resource.getrlimit(resource.RLIMIT_STACK)[1]\n"
            "big = 8 << 20 if hard == resource.RLIM_INFINITY else min(8 << 20, hard)\n"
            "resource.setrlimit(resource.RLIMIT_STACK, (big, hard))\n"
            f"page = b'{{\"data\":[{{\"a\":' + b'[' * {depth} + b']' * {depth} + b'}}]}}'\n"
            "PageReader('data').read(page)\n"
            "print('read')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == b"read", done.stderr.decode()[-500:]


@pytest.mark.parametrize("in_process", [False, True], ids=["fetch-thread", "fetch-process"])
@pytest.mark.parametrize("depth", [60, 200, 300])
def test_records_nested_deep_in_objects_are_written_either_way(
        depth: int, in_process: bool, httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A page whose columns would nest too deep to pickle takes the reference path, in a thread too."""
    nested: Any = 1
    for _ in range(depth):
        nested = {"b": nested}
    _items(httpserver, [{"id": i, "a": nested} for i in range(3)])
    monkeypatch.setattr(prefetch, "may_fork", lambda: in_process)
    job = IngestJob.model_validate({
        "kind": "ingest", "transform": [{"select": ["id"]}],
        "source": {"base_url": httpserver.url_for(""), "path": "/items",
                   "pagination": {"type": "page_number", "page_size": 100}},
        "sink": {"dataset": "items", "schema": {"id": "int"}}})
    assert execute(job, make_ctx(tmp_path))["rows_written"] == 3
