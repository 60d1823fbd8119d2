"""Robustness of the HTTP side: Retry-After, 5xx bursts, 401, truncated JSON, trickling bodies,
rate limit, and the secret canary.  Every server is real and listens on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import structlog
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute, prefetch
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.spec import IngestJob

CANARY = "canary-S3CRET-token-5f2a"
Ctx = Callable[..., RunContext]


def spec(url: str, **source: Any) -> IngestJob:
    base = {"base_url": url, "path": "/items", "records": "items", "pagination": {"type": "none"},
            "retries": {"total": 4, "backoff": "0.05s", "jitter": "0s"}}
    return IngestJob.model_validate({
        "kind": "ingest", "source": {**base, **source},
        "sink": {"dataset": "items", "schema": {"id": "int"}},
    })


def body(ids: list[int]) -> bytes:
    return json.dumps({"items": [{"id": i} for i in ids]}).encode()


def http_response(payload: bytes, status: str = "200 OK", length: int | None = None, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length or len(payload)}\r\n"
            f"Connection: close\r\n{extra}\r\n")
    return head.encode() + payload


def test_429_retry_after_is_honoured(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    times: list[float] = []

    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return Response("slow down", status=429, headers={"Retry-After": "2"})
        return Response(body([1, 2]), content_type="application/json")

    httpserver.expect_request("/items").respond_with_handler(handler)
    result = execute(spec(httpserver.url_for("")), make_ctx(tmp_path))
    assert result["rows_written"] == 2
    assert len(times) == 2
    assert times[1] - times[0] >= 2.0


def test_retry_after_above_the_cap_waits_only_the_cap(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    times: list[float] = []

    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        if len(times) == 1:
            return Response("", status=503, headers={"Retry-After": "3600"})
        return Response(body([1]), content_type="application/json")

    httpserver.expect_request("/items").respond_with_handler(handler)
    job = spec(httpserver.url_for(""), retries={"total": 2, "retry_after_max": "0.5s"})
    execute(job, make_ctx(tmp_path))
    assert 0.4 <= times[1] - times[0] < 3


def test_5xx_burst_then_success(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    statuses = iter([500, 502, 503])

    def handler(request: Request) -> Response:
        status = next(statuses, 200)
        return Response(body([7]) if status == 200 else b"oops", status=status, content_type="application/json")

    httpserver.expect_request("/items").respond_with_handler(handler)
    result = execute(spec(httpserver.url_for("")), make_ctx(tmp_path))
    assert result["rows_written"] == 1
    assert len(httpserver.log) == 4


def test_5xx_beyond_the_retry_budget_fails(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    httpserver.expect_request("/items").respond_with_data("down", status=503)
    with pytest.raises(IngestFailed, match="HTTP 503 .* after 2 retries"):
        execute(spec(httpserver.url_for(""), retries={"total": 2, "backoff": "0.01s"}), make_ctx(tmp_path))
    assert len(httpserver.log) == 3


def test_401_fails_fast_without_retry(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    httpserver.expect_request("/items").respond_with_json({"error": "unauthorized"}, status=401)
    started = time.monotonic()
    with pytest.raises(IngestFailed, match=r"HTTP 401 .*not retried"):
        execute(spec(httpserver.url_for("")), make_ctx(tmp_path))
    assert len(httpserver.log) == 1
    assert time.monotonic() - started < 2


def test_truncated_json_fails_and_publishes_nothing(raw_server: Callable[..., Any], tmp_path: Path,
                                                    make_ctx: Ctx) -> None:
    good = raw_server(lambda conn, _: conn.sendall(http_response(body([1, 2, 3]))))
    execute(spec(good.url), make_ctx(tmp_path))
    partition = tmp_path / "items" / "date=2026-11-05"
    before = {p.name: p.read_bytes() for p in partition.iterdir()}

    truncated = body(list(range(100)))[:-40]  # framing is complete, the JSON is not
    bad = raw_server(lambda conn, _: conn.sendall(http_response(truncated)))
    with pytest.raises(IngestFailed, match="invalid JSON"):
        execute(spec(bad.url), make_ctx(tmp_path))
    assert {p.name: p.read_bytes() for p in partition.iterdir()} == before  # no temp files, old data intact
    assert pq.read_table(partition).num_rows == 3


def test_connection_cut_mid_body_is_retried(raw_server: Callable[..., Any], tmp_path: Path, make_ctx: Ctx) -> None:
    payload = body([1, 2, 3])
    calls = []

    def handler(conn: socket.socket, _: bytes) -> None:
        calls.append(1)
        if len(calls) == 1:
            conn.sendall(http_response(payload[:10], length=len(payload)))  # then close: a short body
        else:
            conn.sendall(http_response(payload))

    server = raw_server(handler)
    assert execute(spec(server.url), make_ctx(tmp_path))["rows_written"] == 3
    assert len(calls) == 2


@pytest.mark.parametrize("in_process", [False, True], ids=["fetch-thread", "fetch-process"])
def test_trickling_server_is_ended_by_the_deadline(raw_server: Callable[..., Any], tmp_path: Path,
                                                   make_ctx: Ctx, in_process: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefetch, "may_fork", lambda: in_process)  # the timer runs where the body is read
    def trickle(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(60):  # one byte a second: each read is well inside the read timeout
            conn.sendall(b" ")
            time.sleep(1)

    server = raw_server(trickle)
    job = spec(server.url, deadline="2s", read_timeout="5s", retries={"total": 0})
    started = time.monotonic()
    with pytest.raises(IngestFailed, match="deadline"):
        execute(job, make_ctx(tmp_path))
    assert time.monotonic() - started < 4.5


def test_rate_limit_spaces_requests(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    times: list[float] = []

    def handler(request: Request) -> Response:
        times.append(time.monotonic())
        page = int(request.args["page"])
        return Response(body([page] if page <= 4 else []), content_type="application/json")

    httpserver.expect_request("/items").respond_with_handler(handler)
    job = spec(httpserver.url_for(""), rate_limit=5, pagination={"type": "page_number", "page_size": 1})
    execute(job, make_ctx(tmp_path))
    gaps = [b - a for a, b in pairwise(times)]
    assert len(times) == 5 and min(gaps) >= 0.19


def client_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured log line but the test server's own access log (werkzeug)."""
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug")]
    assert any("urllib3" in r.name for r in caplog.records)  # the URL-logging library was captured
    return "\n".join(lines)


@pytest.mark.parametrize("auth", [
    {"type": "bearer", "token": CANARY},
    {"type": "api_key", "key": CANARY, "in": "query", "name": "api_key"},
    {"type": "api_key", "key": CANARY, "name": "X-Api-Key"},
    {"type": "basic", "username": "svc", "password": CANARY},
], ids=["bearer", "api_key_query", "api_key_header", "basic"])
def test_secret_canary_never_reaches_logs_or_errors(
    httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx, caplog: pytest.LogCaptureFixture, auth: dict[str, Any]
) -> None:
    def echo(request: Request) -> Response:  # a careless server echoing credentials in its error body
        return Response(json.dumps({"error": "boom", "auth": request.headers.get("Authorization"),
                                    "key": request.headers.get("X-Api-Key"), "url": request.url}), status=500)

    httpserver.expect_request("/items").respond_with_handler(echo)
    caplog.set_level(logging.DEBUG)  # urllib3 logs every URL (with its query) at DEBUG
    job = spec(httpserver.url_for(""), auth=auth, retries={"total": 1, "backoff": "0s"})
    with structlog.testing.capture_logs() as events, pytest.raises(IngestFailed) as caught:
        execute(job, make_ctx(tmp_path))
    assert len(httpserver.log) == 2
    assert any("HTTP 500" in str(e) for e in events)
    error_text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    for text in (error_text, client_logs(caplog), json.dumps(events, default=str)):
        assert CANARY not in text
        assert CANARY.replace("-", "%2D") not in text


@pytest.mark.parametrize(("header", "value"), [
    ("X-API-Key", CANARY),
    ("X-Auth-Token", f"Token {CANARY}"),
], ids=["api_key", "scheme_and_token"])
def test_secret_canary_in_a_source_header_never_reaches_logs_or_errors(
    httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx, caplog: pytest.LogCaptureFixture, header: str, value: str
) -> None:
    def redirect(request: Request) -> Response:  # the next URL carries the key: urllib3 logs it
        return Response(status=302, headers={"Location": f"/denied?echo={request.headers.get(header)}"})

    def denied(request: Request) -> Response:  # a careless server echoing the headers in its 401 body
        return Response(json.dumps({"error": "unauthorized", "got": request.headers.get(header),
                                    "agent": request.headers.get("User-Agent"), "url": request.url}), status=401)

    httpserver.expect_request("/items").respond_with_handler(redirect)
    httpserver.expect_request("/denied").respond_with_handler(denied)
    caplog.set_level(logging.DEBUG)
    job = spec(httpserver.url_for(""), headers={header: value, "User-Agent": "sales-ingest/1.0"})
    with structlog.testing.capture_logs() as events, pytest.raises(IngestFailed) as caught:
        execute(job, make_ctx(tmp_path))
    assert [entry[0].path for entry in httpserver.log] == ["/items", "/denied"]
    assert CANARY in httpserver.log[1][0].url  # the server did echo it into the URL
    error_text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert "HTTP 401" in str(caught.value) and "***" in str(caught.value)
    assert "sales-ingest/1.0" in str(caught.value)  # harmless headers are not masked
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    logs = client_logs(caplog)
    assert "/denied?echo=" in logs  # urllib3 did log the redirect target
    for text in (error_text, logs, json.dumps(events, default=str)):
        assert CANARY not in text
        assert CANARY.replace("-", "%2D") not in text


def test_secret_canary_in_a_connection_error(tmp_path: Path, make_ctx: Ctx, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    caplog.set_level(logging.DEBUG)
    job = spec(f"http://127.0.0.1:{port}", auth={"type": "api_key", "key": CANARY, "in": "query", "name": "k"},
               retries={"total": 1, "backoff": "0s"})
    with structlog.testing.capture_logs() as events, pytest.raises(IngestFailed) as caught:
        execute(job, make_ctx(tmp_path))
    assert "127.0.0.1" in str(caught.value)
    for text in ("".join(traceback.format_exception(caught.value)), client_logs(caplog),
                 json.dumps(events, default=str)):
        assert CANARY not in text
