"""Every paginator against a real HTTP server on 127.0.0.1 (pytest-httpserver)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.spec import IngestJob

ROWS = list(range(1, 24))  # 23 records: pages of 5 end with a short page of 3


def spec(url: str, pagination: dict[str, Any], records: str | None = "items", **source: Any) -> IngestJob:
    return IngestJob.model_validate({
        "kind": "ingest",
        "source": {"base_url": url, "path": "/items", "records": records, "pagination": pagination,
                   "retries": {"total": 0}, **source},
        "sink": {"dataset": "items", "schema": {"id": "int"}},
    })


def written_ids(data_dir: Path) -> list[int]:
    return sorted(pq.read_table(data_dir / "items").column("id").to_pylist())


def json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), content_type="application/json", headers=headers or {})


@pytest.mark.parametrize("with_total", [True, False], ids=["total_pages", "empty_page"])
def test_page_number(httpserver: HTTPServer, tmp_path: Path, with_total: bool,
                     make_ctx: Callable[..., RunContext]) -> None:
    def handler(request: Request) -> Response:
        page, size = int(request.args["page"]), int(request.args["per_page"])
        chunk = ROWS[(page - 1) * size: page * size]
        return json_response({"items": [{"id": i} for i in chunk], "meta": {"pages": 5}})

    httpserver.expect_request("/items").respond_with_handler(handler)
    pagination = {"type": "page_number", "page_size": 5}
    if with_total:
        pagination["total_pages_path"] = "meta.pages"
    result = execute(spec(httpserver.url_for(""), pagination), make_ctx(tmp_path))
    assert written_ids(tmp_path) == ROWS
    assert result["pages"] == (5 if with_total else 6)  # without a total, the empty 6th page stops it


@pytest.mark.parametrize("with_total", [True, False], ids=["total", "short_page"])
def test_offset(httpserver: HTTPServer, tmp_path: Path, with_total: bool, make_ctx: Callable[..., RunContext]) -> None:
    def handler(request: Request) -> Response:
        offset, limit = int(request.args["offset"]), int(request.args["limit"])
        return json_response({"items": [{"id": i} for i in ROWS[offset:offset + limit]], "total": len(ROWS)})

    httpserver.expect_request("/items").respond_with_handler(handler)
    pagination = {"type": "offset", "page_size": 5, **({"total_path": "total"} if with_total else {})}
    result = execute(spec(httpserver.url_for(""), pagination), make_ctx(tmp_path))
    assert written_ids(tmp_path) == ROWS
    assert result["pages"] == 5


def test_cursor(httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]) -> None:
    def handler(request: Request) -> Response:
        start = int(request.args.get("after", "0"))
        chunk = ROWS[start:start + 5]
        nxt = str(start + 5) if start + 5 < len(ROWS) else None
        return json_response({"items": [{"id": i} for i in chunk], "next": {"cursor": nxt}})

    httpserver.expect_request("/items").respond_with_handler(handler)
    pagination = {"type": "cursor", "cursor_path": "next.cursor", "cursor_param": "after"}
    result = execute(spec(httpserver.url_for(""), pagination), make_ctx(tmp_path))
    assert written_ids(tmp_path) == ROWS
    assert result["pages"] == 5


def test_link_header(httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]) -> None:
    def handler(request: Request) -> Response:
        page = int(request.args.get("p", "0"))
        headers = {}
        if (page + 1) * 5 < len(ROWS):  # relative and absolute links both resolve
            target = f"/items?p={page + 1}" if page % 2 else httpserver.url_for(f"/items?p={page + 1}")
            headers["Link"] = f'<{target}>; rel="next", </items?p=0>; rel="first"'
        return json_response([{"id": i} for i in ROWS[page * 5:(page + 1) * 5]], headers)

    httpserver.expect_request("/items").respond_with_handler(handler)
    result = execute(spec(httpserver.url_for(""), {"type": "link_header"}, records=None), make_ctx(tmp_path))
    assert written_ids(tmp_path) == ROWS  # a body that is a list is the records
    assert result["pages"] == 5


def test_next_url(httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]) -> None:
    def handler(request: Request) -> Response:
        page = int(request.args.get("p", "0"))
        nxt = f"/items?p={page + 1}" if (page + 1) * 5 < len(ROWS) else None
        return json_response({"results": {"items": [{"id": i} for i in ROWS[page * 5:(page + 1) * 5]]}, "next": nxt})

    httpserver.expect_request("/items").respond_with_handler(handler)
    pagination = {"type": "next_url", "next_url_path": "next"}
    result = execute(spec(httpserver.url_for(""), pagination, records="results.items"), make_ctx(tmp_path))
    assert written_ids(tmp_path) == ROWS
    assert result["pages"] == 5


def test_cursor_loop_fails_the_run(httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]) -> None:
    cursors = iter(["a", "b", "a"])

    def handler(request: Request) -> Response:
        return json_response({"items": [{"id": 1}], "cursor": next(cursors, "a")})

    httpserver.expect_request("/items").respond_with_handler(handler)
    with pytest.raises(IngestFailed, match="pagination loop"):
        execute(spec(httpserver.url_for(""), {"type": "cursor", "cursor_path": "cursor"}), make_ctx(tmp_path))
    assert not (tmp_path / "items").exists() or not any((tmp_path / "items").glob("date=*"))


def test_next_url_loop_fails_the_run(httpserver: HTTPServer, tmp_path: Path,
                                     make_ctx: Callable[..., RunContext]) -> None:
    httpserver.expect_request("/items").respond_with_json({"items": [{"id": 1}], "next": "/items?same=1"})
    with pytest.raises(IngestFailed, match="pagination loop"):
        execute(spec(httpserver.url_for(""), {"type": "next_url", "next_url_path": "next"}), make_ctx(tmp_path))


def test_max_pages_guard(httpserver: HTTPServer, tmp_path: Path, make_ctx: Callable[..., RunContext]) -> None:
    httpserver.expect_request("/items").respond_with_handler(
        lambda r: json_response({"items": [{"id": int(r.args["page"])}]}))
    job = spec(httpserver.url_for(""), {"type": "page_number", "page_size": 1}, max_pages=4)
    with pytest.raises(IngestFailed, match="max_pages=4"):
        execute(job, make_ctx(tmp_path))
    assert len(httpserver.log) == 4


def test_records_path_missing_is_a_clear_error(httpserver: HTTPServer, tmp_path: Path,
                                               make_ctx: Callable[..., RunContext]) -> None:
    httpserver.expect_request("/items").respond_with_json({"rows": []})
    with pytest.raises(IngestFailed, match="records path 'items' not found"):
        execute(spec(httpserver.url_for(""), {"type": "none"}), make_ctx(tmp_path))
