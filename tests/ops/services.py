"""A local stand-in for the alert services, checking each request against the documented format.

One real HTTP server on 127.0.0.1 (port 0) answers four route families, each like its service:

* ``/pagerduty/v2/enqueue`` - PagerDuty Events API v2: a JSON object with ``routing_key``,
  ``event_action`` (trigger / acknowledge / resolve) and ``dedup_key`` (at most 255 characters;
  required for acknowledge and resolve); a trigger needs ``payload`` with ``summary`` (1-1024
  characters), ``source`` and ``severity`` (critical / error / warning / info).  202 on success,
  400 ``invalid event`` otherwise.
* ``/discord/api/webhooks/ID/TOKEN`` - Discord Execute Webhook: JSON with ``content`` (at most
  2000 characters) and/or ``embeds`` (at most 10; title 256, description 4096, at most 25 fields
  of name 256 / value 1024, 6000 characters in all).  204 on success, 400 otherwise.
* ``/ntfy/TOPIC`` - ntfy publish: the message is the body (at most 4096 bytes, else it would be
  an attachment); ``Title``, ``Priority`` (1-5 or min / low / default / high / max / urgent) and
  ``Tags`` (comma-separated) headers.  200 with the message as JSON.
* ``/hc/UUID[/start|/fail|/log|/EXIT]`` - the Healthchecks pinging API: GET or POST, ``rid``
  optional but a UUID when given, body at most 100 kB.  200 ``OK``.

Every request that breaks its format is recorded in :attr:`ServiceServer.violations` (and
answered with the service's error status), so a test asserts the list is empty.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEVERITIES = {"critical", "error", "warning", "info"}
PD_ACTIONS = {"trigger", "acknowledge", "resolve"}
PD_KEYS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PD_PAYLOAD_KEYS = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
DISCORD_KEYS = {"content", "username", "avatar_url", "tts", "embeds", "allowed_mentions", "components",
                "attachments", "flags", "thread_name", "applied_tags", "poll"}
NTFY_PRIORITIES = {"1", "2", "3", "4", "5", "min", "low", "default", "high", "max", "urgent"}
NTFY_TOPIC = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
HC_PATH = re.compile(r"^/hc/(?P<uuid>[0-9a-f-]{36})(?P<kind>/start|/fail|/log|/\d{1,3})?$")


def pagerduty_problems(event: Any) -> list[str]:
    """What breaks the Events API v2 format in one event (JSON-decoded)."""
    if not isinstance(event, dict):
        return ["body is not a JSON object"]
    problems = [f"unknown key {k!r}" for k in event if k not in PD_KEYS]
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"]:
        problems.append("routing_key missing")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        problems.append(f"event_action {action!r}")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        problems.append("dedup_key must be 1-255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        problems.append(f"{action} needs dedup_key")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "trigger needs payload"]
        problems += [f"unknown payload key {k!r}" for k in payload if k not in PD_PAYLOAD_KEYS]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            problems.append("payload.summary must be 1-1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("payload.source missing")
        if payload.get("severity") not in SEVERITIES:
            problems.append(f"payload.severity {payload.get('severity')!r}")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("payload.custom_details must be an object")
    return problems


def discord_problems(message: Any) -> list[str]:
    """What breaks the Execute Webhook format (JSON-decoded body)."""
    if not isinstance(message, dict):
        return ["body is not a JSON object"]
    problems = [f"unknown key {k!r}" for k in message if k not in DISCORD_KEYS]
    content, embeds = message.get("content"), message.get("embeds")
    if not content and not embeds:
        problems.append("needs content or embeds")
    if content is not None and (not isinstance(content, str) or len(content) > 2000):
        problems.append("content must be text of at most 2000 characters")
    if embeds is not None:
        if not isinstance(embeds, list) or len(embeds) > 10:
            return [*problems, "embeds must be a list of at most 10"]
        total = 0
        for embed in embeds:
            title, description = embed.get("title", ""), embed.get("description", "")
            if len(title) > 256:
                problems.append("embed title over 256")
            if len(description) > 4096:
                problems.append("embed description over 4096")
            if "color" in embed and not (isinstance(embed["color"], int) and 0 <= embed["color"] <= 0xFFFFFF):
                problems.append("embed color must be an integer RGB")
            fields = embed.get("fields", [])
            if len(fields) > 25:
                problems.append("more than 25 embed fields")
            for item in fields:
                if not item.get("name") or not item.get("value"):
                    problems.append("embed field needs name and value")
                if len(item.get("name", "")) > 256 or len(item.get("value", "")) > 1024:
                    problems.append("embed field over its limits")
                total += len(item.get("name", "")) + len(item.get("value", ""))
            total += len(title) + len(description)
        if total > 6000:
            problems.append("embeds over 6000 characters")
    mentions = message.get("allowed_mentions")
    if mentions is not None and not isinstance(mentions, dict):
        problems.append("allowed_mentions must be an object")
    return problems


def ntfy_problems(topic: str, body: bytes, headers: dict[str, str]) -> list[str]:
    problems = []
    if not NTFY_TOPIC.match(topic):
        problems.append(f"topic {topic!r}")
    if len(body) > 4096:
        problems.append("message over 4096 bytes (would become an attachment)")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        problems.append("message is not UTF-8")
    priority = headers.get("priority")
    if priority is not None and priority not in NTFY_PRIORITIES:
        problems.append(f"priority {priority!r}")
    tags = headers.get("tags")
    if tags is not None and any(not t.strip() for t in tags.split(",")):
        problems.append(f"tags {tags!r}")
    return problems


@dataclass
class Received:
    """One request as a service saw it."""

    service: str
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    query: dict[str, list[str]] = field(default_factory=dict)
    title: str | None = None  # ntfy: the decoded Title header


class ServiceServer:
    """The four services on one 127.0.0.1 port; see the module docstring."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.fail_next = 0  # answer this many requests with 503 first (retry tests)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PUT(self) -> None:
                server._handle(self, "PUT")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self._answer(handler, 503, b"try again")
                return
        service = parts.path.split("/")[1] if parts.path.count("/") >= 1 else ""
        item = Received(service, parts.path, method, headers, body, query=parse_qs(parts.query))
        problems: list[str] = []
        status, answer = 404, b"not found"
        if service in ("pagerduty", "discord"):
            if method != "POST":
                problems.append(f"{method} instead of POST")
            if not headers.get("content-type", "").startswith("application/json"):
                problems.append("Content-Type is not application/json")
            try:
                item.json = json.loads(body)
            except ValueError:
                problems.append("body is not JSON")
        if service == "pagerduty" and parts.path == "/pagerduty/v2/enqueue":
            if item.json is not None:
                problems += pagerduty_problems(item.json)
            status = 400 if problems else 202
            answer = json.dumps({"status": "invalid event", "errors": problems} if problems else
                                {"status": "success", "message": "Event processed",
                                 "dedup_key": (item.json or {}).get("dedup_key")}).encode()
        elif service == "discord" and re.match(r"^/discord/api/webhooks/\d+/[\w-]+$", parts.path):
            if item.json is not None:
                problems += discord_problems(item.json)
            status, answer = (400, json.dumps({"message": "; ".join(problems)}).encode()) if problems else (204, b"")
        elif service == "ntfy" and parts.path.count("/") == 2:
            topic = parts.path.split("/")[2]
            if method not in ("POST", "PUT"):
                problems.append(f"{method} instead of POST/PUT")
            problems += ntfy_problems(topic, body, headers)
            if "title" in headers:
                try:
                    item.title = str(make_header(decode_header(headers["title"])))
                except Exception as exc:  # noqa: BLE001 - a broken encoded word is a format violation
                    problems.append(f"Title header: {exc}")
            status = 400 if problems else 200
            answer = json.dumps({"id": uuid.uuid4().hex[:12], "event": "message", "topic": topic,
                                 "message": body.decode("utf-8", "replace")}).encode()
        elif service == "hc" and HC_PATH.match(parts.path):
            if method not in ("GET", "POST", "HEAD"):
                problems.append(f"{method} is not a ping method")
            for rid in item.query.get("rid", []):
                try:
                    uuid.UUID(rid)
                except ValueError:
                    problems.append(f"rid {rid!r} is not a UUID")
            if len(body) > 100_000:
                problems.append("ping body over 100 kB")
            status, answer = (400, b"invalid") if problems else (200, b"OK")
        else:
            problems.append(f"no such endpoint {parts.path!r}")
        with self._lock:
            self.received.append(item)
            self.violations += [f"{service} {parts.path}: {p}" for p in problems]
        self._answer(handler, status, answer)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    def of(self, service: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.service == service]

    def pings(self) -> list[tuple[str, str | None, str]]:
        """``(kind, rid, body)`` of every healthchecks ping: kind is start, success, fail or log."""
        out = []
        for item in self.of("hc"):
            match = HC_PATH.match(item.path)
            assert match is not None
            kind = (match.group("kind") or "/success").lstrip("/")
            out.append((kind, (item.query.get("rid") or [None])[0], item.body.decode("utf-8")))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
