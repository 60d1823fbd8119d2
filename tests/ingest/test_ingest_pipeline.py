"""End to end runs of ``execute``: idempotent reruns, rejects, checks, watermarks and sink modes."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import SalesServer

Ctx = Callable[..., RunContext]
PART = "date=2026-11-05"


def read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def test_sales_run_cleans_and_rejects(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                      tmp_path: Path, make_ctx: Ctx) -> None:
    _, url = sales_api
    result = execute(sales_spec(url), make_ctx(tmp_path))
    out = read(tmp_path / "sales" / PART)
    rejects = read(tmp_path / "sales_rejects" / PART)
    assert result["rows_fetched"] == 3_000
    assert result["rows_fetched"] == (result["rows_written"] + result["rows_rejected"] + result["rows_duplicate"]
                                      + result["rows_filtered"])
    assert len(out) == result["rows_written"] and len(rejects) == result["rows_rejected"] > 0
    assert result["rows_duplicate"] > 0 and out["order_id"].is_unique
    assert (out["sku"] == out["sku"].str.lower()).all()
    assert (out["customer_email"] == out["customer_email"].str.lower()).all()
    assert str(out["sold_at"].dt.tz) == "UTC"
    assert (out["revenue"] - out["quantity"] * out["unit_price"]).abs().max() < 1e-9
    assert (out["quantity"] < 0).any()  # returns are kept, not rejected
    assert rejects["reason"].str.contains("sold_at: cannot parse as timestamp").all()
    assert all(json.loads(r)["order_id"].startswith("ORD-") for r in rejects["record"])
    metadata = pq.ParquetFile(tmp_path / "sales" / PART / "part-00000.parquet").metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert result["pages"] == 6 and result["bytes"] > 0 and result["duration"] > 0


def test_only_columns_of_few_values_are_dictionary_encoded(sales_api: tuple[SalesServer, str],
                                                          sales_spec: Callable[..., IngestJob], tmp_path: Path,
                                                          make_ctx: Ctx) -> None:
    _, url = sales_api
    execute(sales_spec(url), make_ctx(tmp_path))
    path = tmp_path / "sales" / PART / "part-00000.parquet"
    group = pq.ParquetFile(path).metadata.row_group(0)
    encoded = {group.column(i).path_in_schema: group.column(i).has_dictionary_page for i in range(group.num_columns)}
    assert encoded["currency"] and encoded["customer_segment"] and encoded["quantity"]
    assert not encoded["order_id"] and not encoded["sold_at"] and not encoded["revenue"]
    table = pq.read_table(path)  # read back as the plain types of the schema, whatever the encoding
    assert str(table.schema.field("currency").type) == "string" and table.column("order_id").null_count == 0


@pytest.mark.parametrize(("values", "dictionary"), [
    (["a", "b"] * 50, True),              # two values in 100 rows
    ([f"id-{i}" for i in range(100)], False),  # all distinct
    ([i % 50 for i in range(100)], True),  # one value per two rows: still worth a dictionary
    ([i % 51 for i in range(100)], False),
    ([None] * 100, True),
    ([], True),
])
def test_dictionary_columns_by_distinct_values(values: list[Any], dictionary: bool) -> None:
    import pyarrow as pa

    from scheduler.kinds.ingest.sink import dictionary_columns

    assert dictionary_columns(pa.table({"c": pa.array(values, type=pa.string() if not values or
                                                     not isinstance(values[0], int) else pa.int64())})) == (
        ["c"] if dictionary else [])


def test_same_date_twice_is_identical(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                      tmp_path: Path, make_ctx: Ctx) -> None:
    _, url = sales_api
    execute(sales_spec(url), make_ctx(tmp_path))
    first = read(tmp_path / "sales" / PART)
    execute(sales_spec(url), make_ctx(tmp_path))
    second = read(tmp_path / "sales" / PART)
    pd.testing.assert_frame_equal(first, second)
    assert second["order_id"].is_unique
    assert [p.name for p in (tmp_path / "sales" / PART).iterdir()] == ["part-00000.parquet"]


def test_failed_check_publishes_nothing(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                        tmp_path: Path, make_ctx: Ctx) -> None:
    _, url = sales_api
    execute(sales_spec(url), make_ctx(tmp_path))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    strict = sales_spec(url, checks={"min_rows": 10**6, "ranges": {"quantity": {"min": 0}}})
    with pytest.raises(IngestFailed,
                       match=r"checks failed.*min_rows: \d+ rows, at least 1000000.*quantity minimum -\d"):
        execute(strict, make_ctx(tmp_path))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".scheduler"]


@pytest.mark.parametrize("schema, message", [
    ({"store_id": "string"}, "column 'store_id' has type Int64, the schema says string: add a cast step"),
    ({"loyalty_tier": "int"}, r"output columns differ from the schema: missing \['loyalty_tier'\]"),
])
def test_schema_mismatch_is_a_clear_failure(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                            tmp_path: Path, make_ctx: Ctx, schema: dict[str, str],
                                            message: str) -> None:
    _, url = sales_api
    with pytest.raises(IngestFailed, match=message):
        execute(sales_spec(url, sink={"schema": schema}), make_ctx(tmp_path))
    assert not (tmp_path / "sales" / PART).exists()


def incremental_server(httpserver: HTTPServer) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    def handler(request: Request) -> Response:
        seen.append(dict(request.args))
        rows = [{"id": i, "updated_at": f"2026-11-0{i}T10:00:00Z"} for i in (1, 2, 3)]
        return Response(json.dumps(rows), content_type="application/json")

    httpserver.expect_request("/items").respond_with_handler(handler)
    return seen


def incremental_spec(url: str) -> IngestJob:
    return IngestJob.model_validate({
        "kind": "ingest",
        "source": {"base_url": url, "path": "/items", "params": {"since": "{watermark}"}},
        "transform": [{"cast": {"updated_at": "timestamp"}}],
        "sink": {"dataset": "items", "schema": {"id": "int", "updated_at": "timestamp"}},
        "incremental": {"cursor_field": "updated_at", "initial": "2026-01-01T00:00:00Z"},
    })


def test_watermark_is_the_cursor_maximum(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    seen = incremental_server(httpserver)
    result = execute(incremental_spec(httpserver.url_for("")), make_ctx(tmp_path))
    assert result["watermark"] == "2026-11-03T10:00:00+00:00"
    execute(incremental_spec(httpserver.url_for("")), make_ctx(tmp_path, watermark=result["watermark"]))
    assert [s["since"] for s in seen] == ["2026-01-01T00:00:00Z", "2026-11-03T10:00:00+00:00"]


def test_watermark_does_not_advance_when_the_write_fails(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    incremental_server(httpserver)
    from scheduler.kinds.ingest import sink

    def disk_full(self: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink.DatasetWriter, "publish", disk_full)
    outcome: dict[str, Any] = {}
    with pytest.raises(IngestFailed, match="No space left"):
        outcome = execute(incremental_spec(httpserver.url_for("")),
                          make_ctx(tmp_path, watermark="2026-10-01T00:00:00+00:00"))
    assert "watermark" not in outcome  # no result, so the runner has nothing to store
    assert not list(tmp_path.rglob("*.parquet"))
    assert not [p for p in (tmp_path / "items").rglob("*") if p.name.startswith(".")]


def items_server(httpserver: HTTPServer, rows: list[dict[str, Any]]) -> None:
    httpserver.clear()
    httpserver.expect_request("/items").respond_with_json(rows)


def simple_spec(url: str, sink: dict[str, Any], transform: list[Any] | None = None, **extra: Any) -> IngestJob:
    return IngestJob.model_validate({
        "kind": "ingest", "source": {"base_url": url, "path": "/items"}, "transform": transform or [],
        "sink": {"dataset": "items", "schema": {"id": "int", "v": "string"}, **sink}, **extra})


def test_merge_on_a_key(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    sink = {"mode": "merge", "merge_key": "id"}
    items_server(httpserver, [{"id": 1, "v": "a"}, {"id": 2, "v": "a"}, {"id": 3, "v": "a"}])
    execute(simple_spec(httpserver.url_for(""), sink), make_ctx(tmp_path))
    items_server(httpserver, [{"id": 3, "v": "b"}, {"id": 4, "v": "b"}])
    execute(simple_spec(httpserver.url_for(""), sink), make_ctx(tmp_path))
    out = read(tmp_path / "items" / PART).sort_values("id")
    assert out[["id", "v"]].values.tolist() == [[1, "a"], [2, "a"], [3, "b"], [4, "b"]]
    assert len(list((tmp_path / "items" / PART).iterdir())) == 1


def test_append_adds_unique_parts(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    items_server(httpserver, [{"id": 1, "v": "a"}])
    for _ in range(2):
        execute(simple_spec(httpserver.url_for(""), {"mode": "append"}), make_ctx(tmp_path))
    parts = sorted((tmp_path / "items" / PART).iterdir())
    assert len(parts) == 2 and parts[0].name != parts[1].name
    assert read(tmp_path / "items" / PART)["id"].tolist() == [1, 1]


def test_dedupe_keep_last_by_column_across_batches(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    rows = [{"id": i % 150, "v": f"{i:04d}"} for i in range(450)]  # each id thrice, in different batches
    items_server(httpserver, rows[::-1])
    transform = [{"dedupe": {"columns": "id", "keep": "last", "by": "v"}}]
    result = execute(simple_spec(httpserver.url_for(""), {"batch_rows": 100, "row_group_size": 1000}, transform,
                                 checks={"unique": ["id"]}), make_ctx(tmp_path))
    out = read(tmp_path / "items" / PART).sort_values("id")
    assert out["id"].tolist() == list(range(150))
    assert out["v"].tolist() == [f"{300 + i:04d}" for i in range(150)]  # the largest v of each id
    assert result["rows_written"] == 150 and result["rows_duplicate"] == 300


def test_partition_by_a_date_column(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    items_server(httpserver, [{"id": 1, "t": "2026-11-04T23:30:00Z"}, {"id": 2, "t": "2026-11-05T00:30:00Z"},
                              {"id": 3, "t": None}])
    job = IngestJob.model_validate({
        "kind": "ingest", "source": {"base_url": httpserver.url_for(""), "path": "/items"},
        "transform": [{"cast": {"t": "timestamp"}}],
        "sink": {"dataset": "items", "schema": {"id": "int", "t": "timestamp"}, "partition_by": "t",
                 "partition_timezone": "Europe/Berlin"}})
    result = execute(job, make_ctx(tmp_path))
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == ["date=2026-11-05"]  # 00:30 and 01:30 Berlin
    assert result["rows_written"] == 2 and result["rows_rejected"] == 1
    assert "t is null" in read(tmp_path / "items_rejects" / PART)["reason"][0]


def test_stale_temp_files_are_cleaned(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    items_server(httpserver, [{"id": 1, "v": "a"}])
    execute(simple_spec(httpserver.url_for(""), {}), make_ctx(tmp_path))
    stale_file = tmp_path / "items" / PART / ".part.tmp-999999999-deadbeef"
    stale_dir = tmp_path / "items" / ".date=2026-11-06.tmp-999999999-deadbeef"
    stale_file.write_bytes(b"half")
    stale_dir.mkdir()
    execute(simple_spec(httpserver.url_for(""), {}), make_ctx(tmp_path))
    assert not stale_file.exists() and not stale_dir.exists()


def test_empty_day_replaces_the_partition_with_an_empty_file(httpserver: HTTPServer, tmp_path: Path,
                                                              make_ctx: Ctx) -> None:
    items_server(httpserver, [{"id": 1, "v": "a"}])
    execute(simple_spec(httpserver.url_for(""), {}), make_ctx(tmp_path))
    items_server(httpserver, [])
    result = execute(simple_spec(httpserver.url_for(""), {}), make_ctx(tmp_path))
    assert result["rows_written"] == 0
    assert pq.read_table(tmp_path / "items" / PART).num_rows == 0


def test_run_params_override_the_page_size(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                           tmp_path: Path, make_ctx: Ctx) -> None:
    _, url = sales_api
    result = execute(sales_spec(url), make_ctx(tmp_path, params={"per_page": 1000}))
    assert result["pages"] == 3


def test_backfill_date_reaches_the_query(sales_api: tuple[SalesServer, str], sales_spec: Callable[..., IngestJob],
                                         tmp_path: Path, make_ctx: Ctx) -> None:
    _, url = sales_api
    execute(sales_spec(url), make_ctx(tmp_path, day=date(2026, 11, 1)))
    out = read(tmp_path / "sales" / "date=2026-11-01")
    assert out["order_id"].str.startswith("ORD-20261101-").all()
