"""Golden ingest runs: dirty records, the jobs that clean them, and the canonical form of what they publish.

``python tests/ingest/ingest_golden.py`` runs every case through the real
``execute`` against a local HTTP server and writes ``tests/ingest/golden/<case>.json.gz``; the
golden test runs the same cases and compares.  The files were written by the pandas transform
engine that every later engine must match row for row, type for type, reject for reject.

The records are the sample API's (mixed-type quantities, ``$`` prices, bad timestamps, null
stores, duplicates across pages) with pages of hand-made dirt spliced in: values of the wrong
JSON type, nested objects that are not objects, offsets and naive timestamps, accounting
negatives, thousands separators, null keys, unknown currencies, fields that come and go.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
DAY = date(2026, 11, 5)
PAGE_SIZE = 250

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scheduler.kinds.base import RunContext  # noqa: E402
from scheduler.kinds.ingest.spec import IngestJob  # noqa: E402
from scheduler.sample.api import SalesData  # noqa: E402


def _edge(i: int, **fields: Any) -> dict[str, Any]:
    """A clean record ``EDGE-i`` with ``fields`` replaced (a value of ``...`` drops the key)."""
    record: dict[str, Any] = {
        "order_id": f"EDGE-{i:03d}", "sold_at": "2026-11-05T08:00:00Z", "store_id": 7, "sku": "Sku-0042",
        "quantity": 2, "unit_price": "3.50", "currency": "USD",
        "customer": {"email": "Edge@Example.COM", "segment": "retail"},
    }
    for key, value in fields.items():
        if value is ...:
            record.pop(key, None)
        else:
            record[key] = value
    return record


EDGE_RECORDS: list[dict[str, Any]] = [
    _edge(1, quantity="2.0"), _edge(2, quantity="abc"), _edge(3, quantity=2.5), _edge(4, quantity=" 7 "),
    _edge(5, quantity=True), _edge(6, quantity=None), _edge(7, quantity="-3"), _edge(8, quantity="1e2"),
    _edge(9, quantity=12345678901234567),
    _edge(10, unit_price="1,200.50"), _edge(11, unit_price="(12.50)"), _edge(12, unit_price="€3"),
    _edge(13, unit_price="12.5 USD"), _edge(14, unit_price="free"), _edge(15, unit_price=""),
    _edge(16, unit_price=None), _edge(17, unit_price=12.5), _edge(18, unit_price=3), _edge(19, unit_price="  4.20 "),
    _edge(20, unit_price="-$1.00"), _edge(21, unit_price="1e3"), _edge(22, unit_price="$"),
    _edge(23, unit_price="1.2.3"),
    _edge(24, sold_at="2026-11-05T10:00:00+01:00"), _edge(25, sold_at="2026-11-05 11:00"),
    _edge(26, sold_at="2026-11-05T10:00:00.123456Z"), _edge(27, sold_at="2026-11-05"), _edge(28, sold_at="nope"),
    _edge(29, sold_at=None), _edge(30, sold_at=""), _edge(31, sold_at="2026-11-05T10:00:00"),
    _edge(32, sold_at="2026-11-05T23:59:59-05:00"), _edge(33, sold_at="2026-02-30T10:00:00Z"),
    _edge(34, store_id=None), _edge(35, store_id="12"), _edge(36, store_id=...),
    _edge(37, sku="  SKU-ÄÖ  "), _edge(38, sku=None), _edge(39, sku=...),
    _edge(40, customer=None), _edge(41, customer=...), _edge(42, customer={"email": None, "segment": " Wholesale "}),
    _edge(43, customer={"email": "  Pad@Example.com ", "segment": "ONLINE", "tier": {"level": 2}}),
    _edge(44, currency="usd "), _edge(45, currency="XXX"), _edge(46, currency=None), _edge(47, currency=...),
    _edge(48, order_id=None), _edge(49, order_id="EDGE-001"), _edge(50, coupon="SAVE10"),
    _edge(51, quantity=0, unit_price="0"), _edge(52, quantity=-1000, unit_price="$999999.99"),
]

# a page where the nested object is sometimes not an object: the flatten step must reject those
ODD_NESTING: list[dict[str, Any]] = [
    _edge(60), _edge(61, customer="not an object"), _edge(62, customer=["a", "list"]), _edge(63, customer=None),
    _edge(64, customer={"email": "Deep@Example.com", "segment": "retail", "address": {"city": "Berlin"}}),
]

# a page whose numbers are all strings and whose store ids are floats: other Arrow types per batch
ALL_STRINGS: list[dict[str, Any]] = [
    _edge(70 + i, quantity=str(i + 1), store_id=float(i) if i % 3 else None, unit_price=f"${i}.25")
    for i in range(20)
]


def sales_records(n: int = 3_000) -> list[dict[str, Any]]:
    """The sample API's records of DAY with the dirt pages spliced in at fixed places."""
    base = SalesData(n).records(DAY, 0, n)
    out = list(base)
    out[260:260] = EDGE_RECORDS  # page 2, straddling into page 3 (page size 250)
    out[1_600:1_600] = ODD_NESTING
    out[2_510:2_510] = ALL_STRINGS
    return copy.deepcopy(out)


def shipped_daily_sales(url: str) -> IngestJob:
    """``daily_sales`` as shipped in ``config/jobs.yaml``, with small batches and checks that let dirt through."""
    doc = yaml.safe_load((REPO / "config" / "jobs.yaml").read_text())["jobs"]["daily_sales"]
    for key in ("schedule", "timezone", "timeout", "retries", "description"):
        doc.pop(key, None)
    doc["source"].update(base_url=url, deadline="60s", rate_limit=None, auth=None)
    doc["source"]["pagination"]["page_size"] = PAGE_SIZE
    doc["source"]["retries"] = {"total": 0}
    doc["checks"] = {"min_rows": 1}
    doc["sink"].update(batch_rows=500, row_group_size=1_000)
    return IngestJob.model_validate(doc)


def every_step(url: str) -> IngestJob:
    """Every step kind and cast type, on the same records."""
    return IngestJob.model_validate({
        "kind": "ingest",
        "source": {"base_url": url, "path": "/v1/sales", "params": {"date": "{logical_date}"}, "records": "data",
                   "pagination": {"type": "page_number", "page_size": PAGE_SIZE, "total_pages_path": "total_pages"},
                   "deadline": "60s", "retries": {"total": 0}},
        "transform": [
            {"flatten": {"separator": "__"}},
            {"rename": {"customer__email": "email", "customer__segment": "segment"}},
            {"strip": ["sku", "email", "segment", "unit_price"]},
            {"upper": ["sku"]},
            {"lower": ["email", "segment"]},
            {"cast": {"sold_at": {"type": "timestamp", "timezone": "Europe/Berlin"}, "quantity": "float",
                      "store_id": "string"}},
            {"parse_number": ["unit_price"]},
            {"cast": {"unit_price": "decimal(12,2)"}},
            {"derive": {"day": "sold_at", "total": "round(quantity * 2, 1)", "signed": "abs(quantity) - quantity",
                        "shop": "coalesce(store_id, 'none')", "known": "notnull(store_id)"}},
            {"cast": {"day": {"type": "date", "timezone": "America/New_York"}, "known": "bool"}},
            {"filter": {"expr": "quantity > -2", "on_fail": "reject"}},
            {"filter": {"expr": "total < 18", "on_fail": "drop"}},
            {"dedupe": {"columns": ["sku", "shop"], "keep": "last", "by": "sold_at"}},
            {"select": ["order_id", "sold_at", "day", "shop", "sku", "quantity", "unit_price", "total", "signed",
                        "known", "email", "segment", "currency"]},
        ],
        "sink": {"dataset": "steps", "batch_rows": 400, "row_group_size": 1_000,
                 "schema": {"order_id": "string", "sold_at": "timestamp", "day": "date", "shop": "string",
                            "sku": "string", "quantity": "float", "unit_price": "decimal(12,2)", "total": "float",
                            "signed": "float", "known": "bool", "email": "string", "segment": "string",
                            "currency": "string"}},
    })


CASES: dict[str, Callable[[str], IngestJob]] = {"daily_sales": shipped_daily_sales, "every_step": every_step}


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.records = records


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PageServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        page, per_page = int(query.get("page", "1")), int(query.get("per_page", str(PAGE_SIZE)))
        records = self.server.records
        body = json.dumps({"data": records[(page - 1) * per_page:page * per_page], "page": page,
                           "total_pages": math.ceil(len(records) / per_page), "total": len(records)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(records: list[dict[str, Any]]) -> Iterator[str]:
    """The records over real HTTP on 127.0.0.1, paged like the sales API; yields the base URL."""
    server = _PageServer(records)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def context(data_dir: Path) -> RunContext:
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    return RunContext(job="golden", run_id=1, attempt=1, slot=start + timedelta(days=1), logical_date=DAY,
                      data_interval_start=start, data_interval_end=start + timedelta(days=1), data_dir=data_dir)


def _plain(value: Any) -> Any:
    """A JSON value that tells types apart: floats keep their repr, decimals and times their text."""
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, (Decimal, datetime, date)):
        return {type(value).__name__: value.isoformat() if not isinstance(value, Decimal) else str(value)}
    return value


def canonical(table: pa.Table) -> dict[str, Any]:
    """Schema (names, types, metadata) and every row, in file order."""
    return {"schema": table.schema.to_string(show_schema_metadata=True),
            "rows": [[_plain(v) for v in row.values()] for row in table.to_pylist()]}


def run_case(name: str, data_dir: Path, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run case ``name`` end to end; the canonical output, rejects and counts."""
    from scheduler.kinds.ingest import execute

    with serving(records if records is not None else sales_records()) as url:
        spec = CASES[name](url)
        result = execute(spec, context(data_dir))
    part = f"date={DAY.isoformat()}"
    output = pq.read_table(data_dir / spec.sink.dataset / part / "part-00000.parquet")
    rejects_dir = data_dir / spec.sink.rejects_dataset / part
    rejects = pq.read_table(rejects_dir / "part-00000.parquet")
    counts = {k: result[k] for k in ("pages", "rows_fetched", "rows_written", "rows_rejected", "rows_duplicate",
                                     "rows_filtered")}
    return {"counts": counts, "output": canonical(output), "rejects": canonical(rejects)}


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json.gz"


def load(name: str) -> dict[str, Any]:
    return json.loads(gzip.decompress(golden_path(name).read_bytes()))


def main() -> int:
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            got = run_case(name, Path(tmp))
        text = json.dumps(got, ensure_ascii=False, indent=0, sort_keys=True).encode()
        golden_path(name).write_bytes(gzip.compress(text, mtime=0))
        print(f"{name}: {got['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
