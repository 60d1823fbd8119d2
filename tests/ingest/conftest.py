"""Fixtures for ingest tests: specs, run contexts, the sample API and a raw-socket misbehaving server."""

from __future__ import annotations

import copy
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import scheduler.config  # noqa: F401  - the config package first: it imports the kind specs itself
from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import SalesServer, start_server

DAY = date(2026, 11, 5)

SALES_SPEC: dict[str, Any] = {
    "kind": "ingest",
    "source": {
        "base_url": "http://127.0.0.1:1",
        "path": "/v1/sales",
        "params": {"date": "{logical_date}"},
        "pagination": {"type": "page_number", "page_size": 500, "total_pages_path": "total_pages"},
        "records": "data",
        "connect_timeout": "2s",
        "read_timeout": "5s",
        "deadline": "60s",
        "retries": {"total": 3, "backoff": "0.05s", "jitter": "0.01s"},
    },
    "transform": [
        {"flatten": True},
        {"cast": {"sold_at": {"type": "timestamp", "timezone": "UTC"}, "store_id": "int", "quantity": "int"}},
        {"parse_number": ["unit_price"]},
        {"lower": ["sku", "customer_email"]},
        {"dedupe": {"columns": ["order_id"]}},
        {"derive": {"revenue": "quantity * unit_price"}},
        {"select": ["order_id", "sold_at", "store_id", "sku", "quantity", "unit_price", "currency",
                    "customer_email", "customer_segment", "revenue"]},
    ],
    "checks": {"min_rows": 1, "not_null": ["order_id", "sold_at"], "unique": ["order_id"]},
    "sink": {
        "dataset": "sales",
        "batch_rows": 1000,
        "row_group_size": 1000,
        "schema": {"order_id": "string", "sold_at": "timestamp", "store_id": "int", "sku": "string",
                   "quantity": "int", "unit_price": "float", "currency": "string", "customer_email": "string",
                   "customer_segment": "string", "revenue": "float"},
    },
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (a value of ``None`` deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def sales_spec() -> Callable[..., IngestJob]:
    """``sales_spec(url, **overrides)``: the daily sales spec against ``url``, deep-merged overrides."""

    def make(url: str, **override: Any) -> IngestJob:
        doc = merge(SALES_SPEC, {"source": {"base_url": url}})
        return IngestJob.model_validate(merge(doc, override))

    return make


def make_ctx(data_dir: Path, day: date = DAY, watermark: str | None = None, params: dict[str, Any] | None = None,
             log: Any = None) -> RunContext:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return RunContext(job="daily_sales", run_id=1, attempt=1, slot=start + timedelta(days=1, hours=2),
                      logical_date=day, data_interval_start=start, data_interval_end=start + timedelta(days=1),
                      data_dir=data_dir, params=params or {}, watermark=watermark, log=log)


@pytest.fixture(name="make_ctx")
def make_ctx_fixture() -> Callable[..., RunContext]:
    """``make_ctx(data_dir, day=DAY, watermark=None, params=None, log=None)``."""
    return make_ctx


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    return make_ctx(tmp_path / "data")


@pytest.fixture
def sales_api() -> Iterator[tuple[SalesServer, str]]:
    """The sample sales API with 3,000 records a day."""
    server, url = start_server(records_per_day=3_000, per_page=500)
    yield server, url
    server.shutdown()
    server.server_close()


class RawServer:
    """A TCP server on 127.0.0.1 whose ``handler(conn, request_bytes)`` writes raw bytes back."""

    def __init__(self, handler: Callable[[socket.socket, bytes], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            try:
                self.handler(conn, data)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, bytes], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket, bytes], None]) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
