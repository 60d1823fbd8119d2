"""Which page bytes cross from the fetch process: only a batch that must be read the reference way
gets them, and it gets every page's bytes before its last page is handed over."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer

from scheduler.kinds.ingest import execute, prefetch
from scheduler.kinds.ingest.page_bytes import HeldBytes, ReturnedBytes, closes_batch, page_rows
from scheduler.kinds.ingest.pages import ArrowPage, Split
from scheduler.kinds.ingest.spec import IngestJob

_TYPES = {"int": pa.int64(), "float": pa.float64(), "text": pa.string()}


def _page(kind: str, rows: int = 2, number: int = 0) -> ArrowPage | list[Any]:
    """A page of ``rows`` records whose field ``v`` has ``kind``: an Arrow type, ``split`` (numbers
    beside strings), or ``records`` (a page the reader declined: Python records)."""
    if kind == "records":
        return [{"v": [number]}] * rows
    column: pa.Array | Split
    if kind == "split":
        column = Split(pa.array([1] * rows), pa.array([None] * rows, pa.string()))
    else:
        column = pa.nulls(rows, _TYPES[kind])
    return ArrowPage(b"page %d" % number, rows, {"v": column}, {}, "data")


def _cross(pages: list[ArrowPage | list[Any]], batch_rows: int) -> list[list[ArrowPage | list[Any]]]:
    """Send ``pages`` through a :class:`HeldBytes` and a :class:`ReturnedBytes` as the two sides of a
    run do; the batches the transform side cuts, each as it stands when its last page arrives."""
    held, returned = HeldBytes(batch_rows), ReturnedBytes()
    batches: list[list[ArrowPage | list[Any]]] = []
    batch: list[ArrowPage | list[Any]] = []
    rows = 0
    for number, page in enumerate(pages, start=1):
        back = held.page(number, page)
        if back:
            returned.restore(back)
        returned.received(number, page)
        size = page_rows(page)
        if size:
            batch.append(page)
            rows += size
        if batch and closes_batch(rows, batch_rows):
            batches.append(batch)
            batch, rows = [], 0
    return [*batches, batch] if batch else batches


def _needs_bytes(batch: list[ArrowPage | list[Any]]) -> bool:
    arrow = [p for p in batch if isinstance(p, ArrowPage)]
    return len(arrow) < len(batch) or len({p.kinds() for p in arrow}) > 1


@pytest.mark.parametrize(("kinds", "batch_rows", "crossed"), [
    (["int", "int", "int", "int"], 4, [False, False, False, False]),  # two batches of one kind: no bytes
    (["int", "float", "int", "int"], 4, [True, True, False, False]),  # a second kind: the batch gets them all
    (["int", "records", "int", "int"], 4, [True, None, False, False]),  # a declined page, likewise
    (["records", "int", "int", "int"], 4, [None, True, False, False]),
    (["split", "split", "split"], 6, [False, False, False]),
    (["split", "int"], 4, [True, True]),
    (["int", "int", "int", "float"], 10, [True, True, True, True]),  # the last batch is cut by the end
    (["int", "int", "int", "float"], 6, [False, False, False, False]),  # ... a batch of its own
    (["text", "text", "text"], 1, [False, False, False]),  # one page a batch: never two kinds
])
def test_a_batch_gets_its_pages_bytes_only_when_it_needs_them(
        kinds: list[str], batch_rows: int, crossed: list[bool | None]) -> None:
    pages = [_page(kind, number=n) for n, kind in enumerate(kinds, start=1)]
    _cross(pages, batch_rows)
    got = [None if not isinstance(p, ArrowPage) else p.content is not None for p in pages]
    assert got == crossed
    for number, page in enumerate(pages, start=1):
        if isinstance(page, ArrowPage) and page.content is not None:
            assert page.content == b"page %d" % number


def test_a_page_of_no_records_joins_no_batch_and_crosses_without_bytes() -> None:
    pages = [_page("int"), _page("float", rows=0), _page("int")]
    _cross(pages, batch_rows=4)
    assert [p.content for p in pages if isinstance(p, ArrowPage)] == [None, None, None]


def test_every_batch_that_needs_the_reference_path_has_all_its_bytes() -> None:
    rng = random.Random(5)
    for _ in range(300):
        choices = ["int", "int", "int", "float", "text", "split", "records"]
        kinds = [rng.choice(choices) for _ in range(rng.randint(1, 30))]
        pages = [_page(kind, rows=rng.choice([0, 1, 2, 5, 100]), number=n) for n, kind in enumerate(kinds, start=1)]
        for batch in _cross(pages, batch_rows=rng.choice([1, 3, 10, 200])):
            arrow = [p for p in batch if isinstance(p, ArrowPage)]
            if _needs_bytes(batch):
                assert all(p.content is not None for p in arrow), kinds
            else:
                assert all(p.content is None for p in arrow), kinds  # the bytes stayed behind


def _serve(httpserver: HTTPServer, pages: list[list[dict[str, Any]]]) -> None:
    for number, records in enumerate([*pages, []], start=1):
        httpserver.expect_request("/items", query_string={"page": str(number), "per_page": "100"}
                                  ).respond_with_json(records)


def _job(url: str) -> IngestJob:
    return IngestJob.model_validate({
        "kind": "ingest", "transform": [{"cast": {"v": "string"}}, {"select": ["id", "v"]}],
        "source": {"base_url": url, "path": "/items", "pagination": {"type": "page_number", "page_size": 100}},
        "sink": {"dataset": "items", "schema": {"id": "int", "v": "string"}, "batch_rows": 300}})


def test_a_run_in_a_fetch_process_reads_a_mixed_batch_as_in_a_thread(
        httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of three pages: floats then strings (Arrow cannot combine them), a declined page (a
    list field) then plain pages, plain pages, pages that each mix numbers and strings.  Both ways
    publish the same rows; the first two batches were read from their pages' bytes, and the pages
    of the last two crossed without them."""
    floats = [{"id": i, "v": i + 0.5} for i in range(100)]
    texts = [{"id": 100 + i, "v": f"t{i}"} for i in range(100)]
    lists = [{"id": 200 + i, "v": "l", "tags": [i]} for i in range(100)]
    plain = [[{"id": 100 * p + i, "v": f"p{p}-{i}"} for i in range(100)] for p in range(3, 9)]
    mixed = [[{"id": 100 * p + i, "v": i if i % 2 else str(i)} for i in range(100)] for p in range(9, 12)]
    pages = [floats, texts, plain[0], lists, plain[1], plain[2], *plain[3:], *mixed]
    read_as_records: list[int] = []
    python_records = ArrowPage.python_records

    def counted(page: ArrowPage) -> list[Any]:
        read_as_records.append(page.rows)
        return python_records(page)

    without_bytes: list[int] = []
    received = ReturnedBytes.received

    def seen(self: ReturnedBytes, number: int, item: Any) -> None:
        if isinstance(item, ArrowPage) and item.content is None and item.rows:  # not the empty last page
            without_bytes.append(number)
        received(self, number, item)

    monkeypatch.setattr(ArrowPage, "python_records", counted)
    monkeypatch.setattr(ReturnedBytes, "received", seen)
    tables = {}
    for in_process in (False, True):
        _serve(httpserver, pages)
        monkeypatch.setattr(prefetch, "may_fork", lambda fork=in_process: fork)
        data = tmp_path / str(in_process)
        result = execute(_job(httpserver.url_for("")), make_ctx(data))
        assert result["rows_fetched"] == 1200 and result["rows_rejected"] == 0
        tables[in_process] = pq.read_table(data / "items" / "date=2026-11-05")
        httpserver.clear()
    assert tables[True].equals(tables[False])
    assert tables[True].column("v").to_pylist()[:101] == [str(i + 0.5) for i in range(100)] + ["t0"]
    assert tables[True].column("v").to_pylist()[-2:] == ["98", "99"]
    assert read_as_records == [100, 100, 100, 100, 100] * 2  # both mixed batches' Arrow pages, each way
    assert without_bytes == [1, 7, 8, 9, 10, 11, 12]  # page 1's came back when page 2 broke the batch
