"""Alert delivery against a real local webhook: Retry-After is honoured, and a stop ends a wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from polling import wait_for

from scheduler.config.jobs import Notifier
from scheduler.ops.alerts import MAX_BACKOFF, AlertSender
from scheduler.redaction import Redactor


class Webhook:
    """A webhook on 127.0.0.1 answering from a script: ``(status, headers)`` per request, the
    last entry repeated; records when each request arrived (monotonic) and its path."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = script
        self.arrivals: list[float] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                webhook.arrivals.append(time.monotonic())
                status, headers = webhook.script[min(len(webhook.arrivals), len(webhook.script)) - 1]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Events:
    """The sender's log: every event with its fields, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []

    def _add(self, level: str, event: str, fields: dict[str, Any]) -> None:
        with self.lock:
            self.seen.append({"level": level, "event": event, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, fields)

    def named(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.seen if e["event"] == event]


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def webhooks() -> Iterator[list[Webhook]]:
    made: list[Webhook] = []
    yield made
    for hook in made:
        hook.close()


def test_a_429_with_retry_after_is_retried_after_the_wait_asked_for(events: Events, webhooks: list[Webhook]) -> None:
    hook = Webhook([(429, {"Retry-After": "3"}), (200, {})])
    webhooks.append(hook)
    sender = AlertSender(events, Redactor(["alert-secret-42"]))
    notifier = Notifier.model_validate({"url": hook.url, "retries": 2})
    sender.send("failure", (notifier,), {"job": "nightly", "text": "failed with alert-secret-42"})
    sent = wait_for(lambda: events.named("alert sent"), 30, "the alert to be delivered", retry_errors=True)[0]
    sender.close()

    assert sent["attempt"] == 2 and len(hook.arrivals) == 2
    retrying = events.named("alert retrying")
    # the webhook's 3 s, not the backoff's first wait (at most 1 s)
    assert len(retrying) == 1 and retrying[0]["retry_in"] == 3.0 and retrying[0]["error"] == "HTTP 429"
    assert hook.arrivals[1] - hook.arrivals[0] >= 3.0 - 0.05  # and it was waited
    assert not events.named("alert failed")


def test_a_stop_ends_a_long_retry_wait_promptly(events: Events, webhooks: list[Webhook]) -> None:
    hook = Webhook([(429, {"Retry-After": "3600"})])
    webhooks.append(hook)
    sender = AlertSender(events)
    notifier = Notifier.model_validate({"url": hook.url, "retries": 5})
    sender.send("failure", (notifier,), {"job": "nightly", "text": "failed"})
    retrying = wait_for(lambda: events.named("alert retrying"), 30, "the first retry wait", retry_errors=True)[0]
    assert retrying["retry_in"] == MAX_BACKOFF  # the hour asked for, capped

    # close() joins the delivery thread for at most 20 s, less than the 30 s wait in progress:
    # the alert is only given up within it if the stop cut the wait short
    sender.close(timeout=20)
    failed = events.named("alert failed")
    assert len(failed) == 1 and failed[0]["error"] == "HTTP 429", events.seen
    assert len(hook.arrivals) == 1
