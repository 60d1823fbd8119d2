"""The per-format builders, table-driven, and their delivery to a local stand-in of each service.

The shape checks are the ones the stand-in server applies (``services``), written from each
service's documented format; the builders must pass them for every event, including payloads at
and over the services' size limits.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.header import decode_header, make_header
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from polling import wait_for
from services import ServiceServer, discord_problems, ntfy_problems, pagerduty_problems
from structlog.testing import capture_logs

from scheduler.logs import Redactor
from scheduler.ops.alert_formats import PING_BODY, dedup_key, ping_url, render
from scheduler.ops.alerts import AlertSender
from scheduler.ops.pings import PingTarget, end_event

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # 32 characters, like an integration key
CHECK = "5f3d9a4e-2b1c-4e8f-9a7d-0c1b2a3d4e5f"
RID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@dataclass(frozen=True)
class Target:
    """A notifier as the sender reads it (the config's model has the same attributes)."""

    url: str
    format: str
    timeout: timedelta = timedelta(seconds=5)
    retries: int = 0
    routing_key: str | None = None
    severity: str | None = None
    priority: int | str | None = None
    tags: tuple[str, ...] = ()
    token: str | None = None


def run_alert(event: str, **extra: Any) -> dict[str, Any]:
    """A payload as ``AlertSender.send`` hands it to a builder (``event`` and ``host`` added)."""
    base = {"event": event, "host": "worker-1", "job": "daily_sales", "run_id": 41, "logical_date": "2026-11-05",
            "slot": "2026-11-06T02:15:00+00:00", "trigger": "schedule", "attempt": 2, "status": "failed",
            "duration": 12.5, "exit_code": 4, "error": "exited with code 4",
            "last_lines": ["fetching page 3", "HTTP 500 from sales API"],
            "text": f"[{event.upper()}] job daily_sales ..."}
    return {**base, **extra}


# --- one row per (format, event): what the documented format demands, beyond the shape checks ---
def _json_body(request: Any) -> Any:
    return json.loads(request.body)


def check_json(event: str, request: Any) -> None:
    body = _json_body(request)
    assert body["event"] == event and body["job"] == "daily_sales" and body["last_lines"][-1].startswith("HTTP")
    assert request.headers["Content-Type"] == "application/json"


def check_slack(event: str, request: Any) -> None:
    body = _json_body(request)
    assert set(body) == {"text"} and "```\nfetching page 3\nHTTP 500 from sales API\n```" in body["text"]


def check_discord(event: str, request: Any) -> None:
    body = _json_body(request)
    assert discord_problems(body) == []
    assert body["allowed_mentions"] == {"parse": []}  # output text cannot ping @everyone
    embed = body["embeds"][0]
    assert embed["title"] == f"{event}: daily_sales"
    assert "HTTP 500 from sales API" in embed["description"]
    assert {f["name"]: f["value"] for f in embed["fields"]}["exit code"] == "4"


def check_ntfy(event: str, request: Any) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert ntfy_problems("topic", request.body, headers) == []
    assert headers["title"] == f"daily_sales: {event}"
    assert headers["priority"] == ("high" if event in ("failure", "freshness") else "default")
    assert headers["tags"].split(",")[0] in ("rotating_light", "hourglass", "white_check_mark", "heavy_check_mark")
    assert "authorization" not in headers
    assert request.body.decode().endswith("HTTP 500 from sales API")


def check_pagerduty(event: str, request: Any) -> None:
    body = _json_body(request)
    assert pagerduty_problems(body) == []
    assert body["routing_key"] == ROUTING_KEY and body["dedup_key"] == "cron-container-scheduler/daily_sales"
    if event in ("failure", "freshness"):
        assert body["event_action"] == "trigger"
        assert body["payload"]["severity"] == ("error" if event == "failure" else "warning")
        assert body["payload"]["source"] == "worker-1" and body["payload"]["component"] == "daily_sales"
        assert body["payload"]["custom_details"]["exit_code"] == 4
    else:
        assert body == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": body["dedup_key"]}


def check_ping(event: str, request: Any) -> None:
    parts = urlsplit(request.url)
    suffix = {"ping_start": "/start", "ping_success": "", "ping_failure": "/fail", "ping_log": "/log"}[event]
    assert parts.path == f"/hc/{CHECK}{suffix}" and parse_qs(parts.query) == {"rid": [RID]}
    if event == "ping_start":
        assert request.body == b""
    else:
        assert request.body.decode().endswith("HTTP 500 from sales API")


FORMAT_EVENTS = ("failure", "recovery", "success", "freshness")
TABLE: list[tuple[str, str, Callable[[str, Any], None]]] = [
    *[("json", e, check_json) for e in FORMAT_EVENTS],
    *[("slack", e, check_slack) for e in FORMAT_EVENTS],
    *[("discord", e, check_discord) for e in FORMAT_EVENTS],
    *[("ntfy", e, check_ntfy) for e in FORMAT_EVENTS],
    *[("pagerduty", e, check_pagerduty) for e in FORMAT_EVENTS],
    *[("healthchecks", e, check_ping) for e in ("ping_start", "ping_success", "ping_failure", "ping_log")],
]


def target_for(fmt: str, base: str = "http://127.0.0.1:9") -> Any:
    if fmt == "healthchecks":
        return PingTarget(url=f"{base}/hc/{CHECK}", timeout=timedelta(seconds=5), retries=0)
    paths = {"pagerduty": "/pagerduty/v2/enqueue", "discord": "/discord/api/webhooks/1234/tok-EN_x",
             "ntfy": "/ntfy/sched-alerts"}
    return Target(url=base + paths.get(fmt, f"/{fmt}"), format=fmt,
                  routing_key=ROUTING_KEY if fmt == "pagerduty" else None)


@pytest.mark.parametrize(("fmt", "event", "check"), TABLE, ids=[f"{f}-{e}" for f, e, _ in TABLE])
def test_builder(fmt: str, event: str, check: Callable[[str, Any], None]) -> None:
    request = render(event, run_alert(event, rid=RID), target_for(fmt))
    check(event, request)


# --- limits and edge cases, one row each ------------------------------------------------------------
LONG_LINES = [f"line {i} " + "x" * 300 for i in range(400)]  # ~120 kB of output


@pytest.mark.parametrize(("fmt", "event", "measure", "limit"), [
    ("discord", "failure", lambda r: len(json.loads(r.body)["content"]), 2000),
    ("discord", "failure", lambda r: len(json.loads(r.body)["embeds"][0]["description"]), 4096),
    ("ntfy", "failure", lambda r: len(r.body), 4096),
    ("pagerduty", "failure", lambda r: len(json.loads(r.body)["payload"]["summary"]), 1024),
    ("healthchecks", "ping_failure", lambda r: len(r.body), PING_BODY),
], ids=["discord-content", "discord-description", "ntfy-body", "pagerduty-summary", "ping-body"])
def test_builders_stay_within_the_documented_limits(fmt: str, event: str, measure: Callable[[Any], int],
                                                    limit: int) -> None:
    payload = run_alert(event, text="[FAILED] " + "é" * 5000, last_lines=LONG_LINES, rid=RID)
    request = render(event, payload, target_for(fmt))
    assert 0 < measure(request) <= limit
    if fmt != "pagerduty":  # the newest output line survives the cut
        assert "line 399" in request.body.decode("utf-8")


def test_discord_output_cannot_close_the_code_block() -> None:
    request = render("failure", run_alert("failure", last_lines=["```", "@everyone look"]), target_for("discord"))
    description = json.loads(request.body)["embeds"][0]["description"]
    assert description.startswith("```\n") and description.endswith("\n```") and description.count("```") == 2


def test_ntfy_title_outside_ascii_is_an_encoded_word_and_options_apply() -> None:
    target = Target(url="http://h/ntfy/t", format="ntfy", priority=5, tags=("db", "rotating_light"), token="tk_abc")
    request = render("failure", run_alert("failure", job="Bücher-Export"), target)
    assert request.headers["Title"].isascii()
    assert str(make_header(decode_header(request.headers["Title"]))) == "Bücher-Export: failure"
    assert request.headers["Priority"] == "5"
    assert request.headers["Tags"] == "rotating_light,db"  # the event's tag once, then the configured ones
    assert request.headers["Authorization"] == "Bearer tk_abc"


@pytest.mark.parametrize(("job", "expected"), [
    ("nightly", "cron-container-scheduler/nightly"),
    ("j" * 300, None),  # over 255 characters: a stable hash instead
])
def test_pagerduty_dedup_key_is_per_job_and_bounded(job: str, expected: str | None) -> None:
    key = dedup_key(job)
    assert len(key) <= 255 and key == dedup_key(job) and key != dedup_key(job + "x")
    if expected is not None:
        assert key == expected


@pytest.mark.parametrize(("url", "event", "expected"), [
    ("https://hc-ping.com/UUID", "ping_start", "https://hc-ping.com/UUID/start?rid=R"),
    ("https://hc-ping.com/UUID/", "ping_failure", "https://hc-ping.com/UUID/fail?rid=R"),
    ("https://hc-ping.com/KEY/slug?create=1", "ping_success", "https://hc-ping.com/KEY/slug?create=1&rid=R"),
    ("https://hc.example/ping/UUID", "ping_log", "https://hc.example/ping/UUID/log?rid=R"),
])
def test_ping_url(url: str, event: str, expected: str) -> None:
    assert ping_url(url, event, "R") == expected


@pytest.mark.parametrize(("status", "event"), [("success", "ping_success"), ("failed", "ping_failure"),
                                               ("timeout", "ping_failure"), ("interrupted", "ping_log")])
def test_end_event(status: str, event: str) -> None:
    assert end_event(status) == event


def test_ping_without_log_sends_no_body() -> None:
    target = PingTarget(url=f"http://h/hc/{CHECK}", timeout=timedelta(seconds=1), retries=0, send_log=False)
    assert render("ping_failure", run_alert("ping_failure", rid=RID), target).body == b""


# --- real delivery: the sender's thread to the local services -------------------------------------
@pytest.fixture
def services() -> Iterator[ServiceServer]:
    server = ServiceServer()
    yield server
    server.close()


DELIVERIES = [(fmt, event) for fmt, event, _ in TABLE if fmt in ("discord", "ntfy", "pagerduty", "healthchecks")]


@pytest.mark.parametrize(("fmt", "event"), DELIVERIES, ids=[f"{f}-{e}" for f, e in DELIVERIES])
def test_sender_delivers_each_format_to_its_service(fmt: str, event: str, services: ServiceServer) -> None:
    target = target_for(fmt, services.url)
    token_url = target.url
    payload = run_alert(event, rid=RID)
    payload.pop("event")
    payload.pop("host")
    service = "hc" if fmt == "healthchecks" else fmt
    with capture_logs() as logs:
        sender = AlertSender(structlog.get_logger(), Redactor([ROUTING_KEY, token_url]).redact)
        sender.send(event, (target,), payload)
        wait_for(lambda: services.of(service), 10, f"the {fmt} request", retry_errors=True)
        sender.close(5.0)
    assert services.violations == []
    assert [e["event"] for e in logs] == ["alert sent"] and logs[0]["target"] == "127.0.0.1"
    logged = json.dumps(logs, default=str)
    assert ROUTING_KEY not in logged and urlsplit(token_url).path not in logged


def test_sender_retries_a_service_error_then_delivers(services: ServiceServer) -> None:
    services.fail_next = 1
    target = Target(url=services.url + "/pagerduty/v2/enqueue", format="pagerduty", routing_key=ROUTING_KEY,
                    retries=2)
    with capture_logs() as logs:
        sender = AlertSender(structlog.get_logger())
        sender.send("failure", (target,), run_alert("failure"))
        wait_for(lambda: services.of("pagerduty"), 15, "the retried trigger", retry_errors=True)
        sender.close(5.0)
    assert services.violations == []
    assert [(e["event"], e.get("attempt")) for e in logs] == [("alert retrying", 1), ("alert sent", 2)]


def test_service_server_flags_a_malformed_event(services: ServiceServer) -> None:
    """The stand-in really checks: an event that breaks the documented format is a violation."""
    bad = json.dumps({"routing_key": ROUTING_KEY, "event_action": "trigger",
                      "payload": {"summary": "", "severity": "fatal"}}).encode()
    request = urllib.request.Request(services.url + "/pagerduty/v2/enqueue", data=bad, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert any("payload.severity" in v for v in services.violations)
    assert any("payload.source" in v for v in services.violations)


def test_an_alert_no_format_can_render_is_logged_and_the_next_one_still_goes(services: ServiceServer) -> None:
    @dataclass(frozen=True)
    class Keyless:  # a pagerduty target without its routing key: the builder cannot make an event
        url: str
        format: str = "pagerduty"
        timeout: timedelta = timedelta(seconds=5)
        retries: int = 0

    good = target_for("ntfy", services.url)
    with capture_logs() as logs:
        sender = AlertSender(structlog.get_logger())
        sender.send("failure", (Keyless(services.url + "/pagerduty/v2/enqueue"), good), run_alert("failure"))
        wait_for(lambda: services.of("ntfy"), 10, "the ntfy alert after the broken one", retry_errors=True)
        sender.close(5.0)
    assert [(e["event"], e.get("error")) for e in logs] == [("alert failed", "cannot render: AttributeError"),
                                                            ("alert sent", None)]
    assert services.of("pagerduty") == [] and services.violations == []
