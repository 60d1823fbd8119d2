"""Per-format request builders: what one alert looks like on the wire for each service.

Each builder is a pure function ``(event, payload, target) -> Request``: ``payload`` is the
generic alert (already redacted, with ``event`` and ``host``), ``target`` a notifier or ping as
configured (a model or its compiled view: read alike).  No builder does IO, reads a clock or
raises on a well-formed payload; delivery (the thread, timeouts, retries) is
:class:`scheduler.ops.alerts.AlertSender`'s.

What each builder must hold, from the service's documented format:

* ``json``: the generic payload as a JSON object;
* ``slack``: ``{"text": ...}``;
* ``discord``: ``content`` of at most 2000 characters plus one embed within Discord's embed limits
  (title 256, description 4096, field name 256 / value 1024, 6000 in all), mentions disabled so
  output text cannot ping ``@everyone``;
* ``ntfy``: a text body of at most 4096 bytes (larger ones become attachments) POSTed to the
  topic URL, with ``Title`` (RFC 2047-encoded when not ASCII), ``Priority`` and ``Tags`` headers;
* ``pagerduty`` (Events API v2): ``routing_key``, ``event_action`` (``trigger`` for failures and
  freshness breaches, ``resolve`` for recoveries and successes) and a ``dedup_key`` per job, so
  a resolve closes the job's open incident; triggers carry ``payload.summary`` (at most 1024
  characters), ``payload.source`` and ``payload.severity``;
* ``healthchecks`` (the job's ``ping``): ``URL/start`` when a run starts, ``URL`` on success,
  ``URL/fail`` on failure, ``URL/log`` for a run stopped on purpose; a ``rid`` query parameter
  pairs start and end of one run; the body (summary and output tail) is at most 10,000 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

CLIENT = "cron-container-scheduler"
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
DISCORD_CONTENT = 2000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 3500  # of 4096: leaves room in the 6000 characters all of an embed may hold
DISCORD_FIELD = 1024
NTFY_BODY = 4096
PAGERDUTY_SUMMARY = 1024
PAGERDUTY_DEDUP = 255
PING_BODY = 10_000  # healthchecks.io's default stored body size (self-hosted PING_BODY_LIMIT)
FAILING = ("failure", "freshness")
# ping events -> the path suffix healthchecks.io gives them
PING_PATHS = {"ping_start": "/start", "ping_success": "", "ping_failure": "/fail", "ping_log": "/log"}
NTFY_TAGS = {"failure": "rotating_light", "freshness": "hourglass", "recovery": "white_check_mark",
             "success": "heavy_check_mark"}
DISCORD_COLORS = {"failure": 0xE01E5A, "freshness": 0xECB22E, "recovery": 0x2EB67D, "success": 0x2EB67D}


class Target(Protocol):
    """What delivery reads of where an alert goes: a notifier, or a job's ping."""

    @property
    def url(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def timeout(self) -> timedelta: ...
    @property
    def retries(self) -> int: ...


@dataclass(frozen=True)
class Request:
    """One HTTP POST: where, what body, which headers."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _opt(target: Any, name: str, default: Any = None) -> Any:
    """A format-specific key of ``target`` (a ping has none of a notifier's extras)."""
    value = getattr(target, name, None)
    return default if value is None else value


def _json(data: Any) -> bytes:
    return json.dumps(data, default=str, ensure_ascii=False).encode("utf-8")


def _tail(payload: Mapping[str, Any]) -> str:
    return "\n".join(str(line) for line in payload.get("last_lines") or [])


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, marked when shortened."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_bytes(text: str, limit: int) -> str:
    """The end of ``text`` in at most ``limit`` UTF-8 bytes (the newest output matters most)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[len(data) - limit:].decode("utf-8", errors="ignore")


def _first_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def _header(text: str) -> str:
    """A header value: ASCII as is, anything else as an RFC 2047 encoded word."""
    text = " ".join(text.split())  # no CR/LF can reach a header
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def slack_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The Slack-compatible form: ``{"text": ...}`` with the output tail in a code block."""
    text = str(payload.get("text", ""))
    lines = payload.get("last_lines") or []
    if lines:
        text += "\n```\n" + "\n".join(str(line) for line in lines)[-2500:] + "\n```"
    return {"text": text}


def json_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    return Request(target.url, _json(dict(payload)), JSON)


def slack_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    return Request(target.url, _json(slack_body(payload)), JSON)


def discord_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    job = str(payload.get("job", "?"))
    facts = [("run", payload.get("run_id")), ("logical date", payload.get("logical_date")),
             ("attempt", payload.get("attempt")), ("duration (s)", payload.get("duration")),
             ("exit code", payload.get("exit_code")), ("host", payload.get("host"))]
    embed: dict[str, Any] = {
        "title": _cut(f"{event}: {job}", DISCORD_TITLE),
        "color": DISCORD_COLORS.get(event, 0x808080),
        "fields": [{"name": name, "value": _cut(str(value), DISCORD_FIELD), "inline": True}
                   for name, value in facts if value not in (None, "")],
    }
    tail = _tail(payload).replace("```", "'''")  # a fence inside the output would end the code block
    if tail:
        embed["description"] = "```\n" + tail[-(DISCORD_DESCRIPTION - 8):] + "\n```"
    body = {"content": _cut(str(payload.get("text") or f"{event}: {job}"), DISCORD_CONTENT),
            "embeds": [embed], "allowed_mentions": {"parse": []}}
    return Request(target.url, _json(body), JSON)


def ntfy_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    job = str(payload.get("job", "?"))
    # the summary first, at most a quarter of the message, so the newest output always fits too
    text = _first_bytes(str(payload.get("text") or f"{event}: {job}"), NTFY_BODY // 4)
    tail = _tail(payload)
    if tail:
        room = NTFY_BODY - len(text.encode("utf-8")) - 2
        text = (text + "\n\n" + _last_bytes(tail, room)) if room > 0 else text
    tags = [NTFY_TAGS[event]] if event in NTFY_TAGS else []
    tags += [tag for tag in _opt(target, "tags", ()) if tag not in tags]
    priority = _opt(target, "priority", "high" if event in FAILING else "default")
    headers = {**TEXT, "Title": _header(f"{job}: {event}"), "Priority": str(priority), "Tags": ",".join(tags)}
    token = _opt(target, "token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return Request(target.url, _first_bytes(text, NTFY_BODY).encode("utf-8"), headers)


def dedup_key(job: str) -> str:
    """The PagerDuty dedup key of a job: one open incident per job, at most 255 characters."""
    key = f"{CLIENT}/{job}"
    if len(key) <= PAGERDUTY_DEDUP:
        return key
    return f"{CLIENT}/{hashlib.sha256(job.encode('utf-8')).hexdigest()}"


def pagerduty_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    job = str(payload.get("job", "?"))
    body: dict[str, Any] = {"routing_key": target.routing_key, "dedup_key": dedup_key(job)}
    if event not in FAILING:
        body["event_action"] = "resolve"
        return Request(target.url, _json(body), JSON)
    details = {k: payload.get(k) for k in ("run_id", "logical_date", "slot", "trigger", "attempt", "status",
                                          "duration", "exit_code", "error", "consecutive_failures",
                                          "expect_success_within", "last_success") if payload.get(k) is not None}
    tail = _tail(payload)
    if tail:
        details["last_lines"] = tail[-4000:]
    body.update({
        "event_action": "trigger",
        "client": CLIENT,
        "payload": {
            "summary": _cut(str(payload.get("text") or f"job {job}: {event}"), PAGERDUTY_SUMMARY),
            "source": str(payload.get("host") or CLIENT),
            "severity": _opt(target, "severity", "warning" if event == "freshness" else "error"),
            "component": job,
            "group": CLIENT,
            "class": event,
            "custom_details": details,
        },
    })
    return Request(target.url, _json(body), JSON)


def ping_url(url: str, event: str, rid: str | None) -> str:
    """``url`` with the event's path suffix and the ``rid`` query parameter (an existing query kept)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + PING_PATHS[event]
    query = "&".join(q for q in (parts.query, f"rid={rid}" if rid else "") if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


def healthchecks_format(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    rid = payload.get("rid")
    url = ping_url(target.url, event, str(rid) if rid else None)
    if event == "ping_start" or not _opt(target, "send_log", True):
        return Request(url, b"", TEXT)
    text = str(payload.get("text") or "")
    tail = _tail(payload)
    body = f"{text}\n\n{tail}" if tail else text
    return Request(url, _last_bytes(body, PING_BODY).encode("utf-8"), TEXT)


Builder = Callable[[str, Mapping[str, Any], Any], Request]
BUILDERS: Mapping[str, Builder] = {
    "json": json_format,
    "slack": slack_format,
    "discord": discord_format,
    "ntfy": ntfy_format,
    "pagerduty": pagerduty_format,
    "healthchecks": healthchecks_format,
}


def render(event: str, payload: Mapping[str, Any], target: Any) -> Request:
    """The request for ``event`` in ``target.format`` (``json`` when the format is unknown)."""
    return BUILDERS.get(str(target.format), json_format)(event, payload, target)
