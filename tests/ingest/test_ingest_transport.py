"""A source that cannot be reached fails fast, says why in one line, and logs each retry.

Real sockets only: a port held bound but never listening (connections are refused while the test
holds it, and nobody else can take it), a ``.invalid`` name (RFC 6761: never resolves), a server
that answers a TLS client in plain text, and one that accepts but never answers.  No timing
thresholds: the number of attempts logged and the waits they announce are what is checked.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pytest_httpserver import HTTPServer

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.neterrors import ConnectBudget, Failure

CANARY = "canary-S3CRET-key-77c1"
Ctx = Callable[..., RunContext]
RETRY_LINE = re.compile(r"^retrying GET (\S+): (.+) \(attempt (\d+)/(\d+), next in (\d+\.\d)s\)$")


def spec(url: str, **source: Any) -> IngestJob:
    base = {"base_url": url, "path": "/v1/sales", "records": "items", "pagination": {"type": "none"},
            "params": {"date": "{logical_date}"},
            "auth": {"type": "api_key", "key": CANARY, "in": "query", "name": "api_key"},
            "retries": {"total": 2, "backoff": "0.1s", "jitter": "0s", "connect_budget": "2s"}}
    return IngestJob.model_validate({
        "kind": "ingest", "source": {**base, **source}, "sink": {"dataset": "items", "schema": {"id": "int"}},
    })


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def run_failing(job: IngestJob, ctx: RunContext) -> tuple[str, list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as events, pytest.raises(IngestFailed) as caught:
        execute(job, ctx)
    error = caught.value
    text = "".join(traceback.format_exception(error)) + json.dumps(events, default=str)
    assert CANARY not in text
    assert error.__cause__ is None and error.__context__ is None
    message = str(error)
    assert "\n" not in message
    for noise in ("Traceback", "HTTPConnectionPool", "HTTPSConnectionPool", "Max retries", "Caused by"):
        assert noise not in message, message
    assert not any("traceback" in e for e in events)  # an expected transport failure is not a bug
    return message, events


def retry_lines(events: list[dict[str, Any]]) -> list[re.Match[str]]:
    found = [RETRY_LINE.match(e["event"]) for e in events if str(e["event"]).startswith("retrying ")]
    assert all(found), [e["event"] for e in events]
    return [m for m in found if m]


def test_refused_connection_is_retried_within_the_connect_budget(refused_port: int, tmp_path: Path,
                                                                 make_ctx: Ctx) -> None:
    # backoff 0.1s doubling: waits 0.1 + 0.2 + 0.4 + 0.8 = 1.5s fit in 2s, the next (1.6s) does not
    message, events = run_failing(spec(f"http://127.0.0.1:{refused_port}"), make_ctx(tmp_path))
    lines = retry_lines(events)
    assert [(m[1], m[2], m[3], m[4]) for m in lines] == [
        (f"127.0.0.1:{refused_port}/v1/sales", "connection refused", str(n), "5") for n in range(2, 6)]
    assert [float(m[5]) for m in lines] == [0.1, 0.2, 0.4, 0.8]
    assert sum(float(m[5]) for m in lines) <= 2.0
    assert re.fullmatch(rf"cannot connect to 127\.0\.0\.1:{refused_port}: connection refused "
                        r"\(5 attempts in \d+\.\ds\)", message), message
    warnings = [e for e in events if e["log_level"] == "warning" and e["event"].startswith("retrying")]
    assert [e["request_attempt"] for e in warnings] == [2, 3, 4, 5]
    assert {e["reason"] for e in warnings} == {"connection refused"}


def test_a_smaller_budget_means_fewer_attempts(refused_port: int, tmp_path: Path, make_ctx: Ctx) -> None:
    job = spec(f"http://127.0.0.1:{refused_port}",
               retries={"total": 5, "backoff": "0.1s", "jitter": "0s", "connect_budget": "0.3s"})
    message, events = run_failing(job, make_ctx(tmp_path))
    assert [(m[3], m[4]) for m in retry_lines(events)] == [("2", "3"), ("3", "3")]  # 0.1 + 0.2 <= 0.3
    assert "(3 attempts in" in message


def test_zero_budget_fails_on_the_first_refusal(refused_port: int, tmp_path: Path, make_ctx: Ctx) -> None:
    job = spec(f"http://127.0.0.1:{refused_port}", retries={"connect_budget": "0s"})
    message, events = run_failing(job, make_ctx(tmp_path))
    assert retry_lines(events) == []
    assert message.startswith(f"cannot connect to 127.0.0.1:{refused_port}: connection refused (1 attempt in ")


def test_a_name_that_does_not_resolve_is_retried_once(tmp_path: Path, make_ctx: Ctx) -> None:
    job = spec("https://sales-api.example.invalid",
               retries={"backoff": "0.1s", "jitter": "0s", "connect_budget": "10s"})
    message, events = run_failing(job, make_ctx(tmp_path))
    assert [(m[1], m[2], m[3], m[4]) for m in retry_lines(events)] == [
        ("sales-api.example.invalid/v1/sales", "name does not resolve", "2", "2")]
    assert re.fullmatch(r"cannot connect to sales-api\.example\.invalid:443: name does not resolve "
                        r"\(2 attempts in \d+\.\ds\)", message), message


@pytest.fixture
def plain_text_server() -> Iterator[int]:
    """Answers every connection with a plain HTTP 400 at once: a TLS client cannot handshake."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_tls_failure_is_not_retried(plain_text_server: int, tmp_path: Path, make_ctx: Ctx) -> None:
    message, events = run_failing(spec(f"https://127.0.0.1:{plain_text_server}"), make_ctx(tmp_path))
    assert retry_lines(events) == []
    assert message.startswith(f"GET 127.0.0.1:{plain_text_server}/v1/sales failed: TLS handshake failed: "), message


def test_read_timeout_is_retried_then_named(raw_server: Callable[..., Any], tmp_path: Path, make_ctx: Ctx) -> None:
    release = threading.Event()
    server = raw_server(lambda conn, _: release.wait(10))  # reads the request, never answers
    job = spec(server.url, read_timeout="0.3s", retries={"total": 1, "backoff": "0.1s", "jitter": "0s"})
    try:
        message, events = run_failing(job, make_ctx(tmp_path))
    finally:
        release.set()
    lines = retry_lines(events)
    assert [(m[2], m[3], m[4]) for m in lines] == [("no response within 0.3s (read timeout)", "2", "2")]
    assert message == (f"GET {server.url[len('http://'):]}/v1/sales failed: no response within 0.3s (read timeout) "
                       "after retries")
    assert server.requests == 2


def test_http_status_retries_are_logged_one_line_each(httpserver: HTTPServer, tmp_path: Path, make_ctx: Ctx) -> None:
    httpserver.expect_request("/v1/sales").respond_with_data("upstream\nbusy", status=503)
    message, events = run_failing(spec(httpserver.url_for("").rstrip("/")), make_ctx(tmp_path))
    assert [(m[2], m[3], m[4]) for m in retry_lines(events)] == [("HTTP 503", "2", "3"), ("HTTP 503", "3", "3")]
    assert message.startswith("HTTP 503 from ") and message.endswith("after 2 retries: upstream busy")
    assert len(httpserver.log) == 3


@pytest.mark.parametrize(("budget", "backoff", "backoff_max", "attempts"), [
    (10, 1, 60, 4),     # the defaults: waits 1, 2, 4
    (0, 1, 60, 1),
    (0.99, 1, 60, 1),
    (1, 1, 60, 2),
    (10, 1, 2, 6),      # capped waits: 1, 2, 2, 2, 2
    (5, 0, 60, 101),    # no backoff: a hundred retries at most, never an endless loop
])
def test_connect_budget_plan(budget: float, backoff: float, backoff_max: float, attempts: int) -> None:
    plan = ConnectBudget(budget, backoff, backoff_max, jitter=0)
    assert plan.attempts == attempts
    assert sum(plan.waits) <= budget
    assert plan.planned(Failure("dns", "name does not resolve")) == min(attempts, 2)


def test_run_job_records_one_line_and_logs_no_traceback(refused_port: int, tmp_path: Path, write_config: Any,
                                                        scheduler_cmd: list[str],
                                                        scheduler_env: dict[str, str]) -> None:
    config = write_config(f"""
        jobs:
          daily_sales:
            kind: ingest
            source:
              base_url: http://127.0.0.1:{refused_port}
              path: /v1/sales
              params: {{date: "{{logical_date}}"}}
              auth: {{type: bearer, token: "${{SALES_API_TOKEN}}"}}
              retries: {{backoff: 0.1s, jitter: 0s, connect_budget: 0.5s}}
            sink:
              dataset: sales
              schema: {{id: int}}
    """)
    env = {**scheduler_env, "SALES_API_TOKEN": CANARY}
    data = tmp_path / "data"
    proc = subprocess.run([*scheduler_cmd, "run-job", "daily_sales", "--date", "2026-11-05", "--config", str(config),
                           "--data-dir", str(data), "--log-format", "json"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert CANARY not in proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not [e for e in events if "traceback" in e], "an expected transport failure logged a traceback"
    assert "Traceback" not in proc.stdout + proc.stderr
    retries = [e for e in events if str(e["event"]).startswith("retrying GET")]
    # 0.1 + 0.2 fit in 0.5s, + 0.4 not
    assert [(e["request_attempt"], e["request_attempts"]) for e in retries] == [(2, 3), (3, 3)]
    history = subprocess.run([*scheduler_cmd, "history", "--json", "--config", str(config), "--data-dir", str(data)],
                             capture_output=True, text=True, env=env, timeout=60)
    [record] = json.loads(history.stdout)
    assert record["status"] == "failed"
    assert re.fullmatch(rf"cannot connect to 127\.0\.0\.1:{refused_port}: connection refused "
                        r"\(3 attempts in \d+\.\ds\)", record["error"]), record["error"]


def test_connect_budget_is_in_the_config_schema(scheduler_cmd: list[str], scheduler_env: dict[str, str]) -> None:
    proc = subprocess.run([*scheduler_cmd, "schema"], capture_output=True, text=True, env=scheduler_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties", {})
            if "connect_budget" in props and "total" in props:
                found.append(props["connect_budget"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(proc.stdout))
    assert found and found[0].get("default") in ("10s", "PT10S"), found
    assert "retrying failed connections" in found[0]["description"]
