"""Alert targets of a job: the ``on_failure`` / ``on_recovery`` / ``on_success`` notifiers and ``ping``.

A :class:`Notifier` is one webhook in one of the formats of :mod:`scheduler.ops.alert_formats`;
the keys a format needs (``routing_key`` for PagerDuty, ``priority``/``tags``/``token`` for ntfy)
are refused on any other format, at their own line, so a misplaced key is never silently unused.
A :class:`Ping` is the job's healthchecks.io check: one URL that hears the start, the success and
the failure of every run, which is how healthchecks.io models a cron job (so it is a job key of
its own, not a notifier that would have to be repeated under three lists).

What must hold after validation: a ``pagerduty`` notifier has a routing key; format-specific keys
appear only on their format.  Across a job's lists (checked by the loader, at the notifier's
line): a PagerDuty notifier that resolves (``on_recovery``/``on_success``) has a PagerDuty
notifier with the same routing key under ``on_failure`` that triggers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from scheduler.config.types import Duration, Model

# key -> the one format it belongs to (checked per key, so the error points at that key's line)
FORMAT_KEYS = {"routing_key": "pagerduty", "severity": "pagerduty", "priority": "ntfy", "tags": "ntfy",
               "token": "ntfy"}
PING_HINT = "healthchecks.io is not a notifier format: give the job 'ping: {url: ...}' (start, success and failure)"


class Notifier(Model):
    """A webhook to call on a run outcome (used by the operations features)."""

    url: str = Field(description="Where the alert is sent (webhook, ntfy topic URL or the PagerDuty Events API "
                                 "v2 endpoint); only its host is ever logged, the whole URL is masked like a secret.")
    format: Literal["json", "slack", "discord", "ntfy", "pagerduty"] = Field(
        default="json",
        description="json (the generic payload), slack ({\"text\": ...}), discord (content and an embed), "
                    "ntfy (text body with Title/Priority/Tags headers) or pagerduty (Events API v2: trigger on "
                    "failure, resolve on recovery or success).")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Per delivery attempt.")
    retries: int = Field(default=3, ge=0, le=10, description="Extra attempts after transport errors, 5xx, 408 or 429.")
    routing_key: str | None = Field(
        default=None, description="pagerduty only, required there: the Events API v2 integration key (a secret; "
                                  "routing_key_file reads it from a file).")
    severity: Literal["critical", "error", "warning", "info"] | None = Field(
        default=None, description="pagerduty only: severity of triggered alerts (default: error for failures, "
                                  "warning for freshness breaches).")
    priority: Literal[1, 2, 3, 4, 5, "min", "low", "default", "high", "max", "urgent"] | None = Field(
        default=None, description="ntfy only: message priority, 1-5 or min/low/default/high/max/urgent (default: "
                                  "high for failures and freshness, default otherwise).")
    tags: tuple[str, ...] = Field(
        default=(), description="ntfy only: tags added to the message, a list or comma-separated text (emoji short "
                                "codes show as emojis).")
    token: str | None = Field(
        default=None, description="ntfy only: access token sent as 'Authorization: Bearer' (a secret).")

    @field_validator("format", mode="before")
    @classmethod
    def _not_healthchecks(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("healthchecks", "healthchecks.io", "hc"):
            raise ValueError(PING_HINT)
        return value

    @field_validator("routing_key", "severity", "priority", "tags", "token")
    @classmethod
    def _only_on_its_format(cls, value: Any, info: ValidationInfo) -> Any:
        wanted = FORMAT_KEYS[str(info.field_name)]
        current = info.data.get("format")
        if current is not None and current != wanted and value not in (None, ()):
            raise ValueError(f"only for format {wanted} (this notifier's format is {current})")
        return value

    @field_validator("tags", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _tag_list(cls, value: Any) -> Any:
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value  # ntfy's own form
        if isinstance(items, list):
            for tag in items:
                if not isinstance(tag, str) or not tag or "," in tag or not tag.isascii() or not tag.isprintable():
                    raise ValueError(f"tag {tag!r} must be printable ASCII text without commas")
        return items

    @field_validator("routing_key")
    @classmethod
    def _routing_key_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _format_needs(self) -> Notifier:
        if self.format == "pagerduty" and self.routing_key is None:
            raise ValueError("format pagerduty needs 'routing_key' (or 'routing_key_file')")
        return self


class Ping(Model):
    """A healthchecks.io-style check URL pinged at every run's start and end."""

    url: str = Field(description="The check's ping URL (https://hc-ping.com/UUID, or a self-hosted one); "
                                 "start pings go to URL/start, failures to URL/fail; masked like a secret.")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Per delivery attempt.")
    retries: int = Field(default=3, ge=0, le=10, description="Extra attempts after transport errors, 5xx, 408 or 429.")
    send_log: bool = Field(default=True, description="Send the run's summary and last output lines as the body "
                                                     "of the success and failure pings.")


def ping_input(value: Any) -> Any:
    """``ping: URL`` is short for ``ping: {url: URL}``."""
    return {"url": value} if isinstance(value, str) else value


def resolving_without_trigger(job: Any) -> list[tuple[str, int, str]]:
    """``(field, index, message)`` for each PagerDuty notifier of ``job`` that resolves what nothing triggers.

    A resolve closes what a trigger with the same routing key (and the job's dedup key) opened;
    without a ``pagerduty`` notifier of that key under ``on_failure`` nothing ever opens.
    """
    triggers = {n.routing_key for n in job.on_failure if n.format == "pagerduty"}
    return [(field_name, index, "a pagerduty notifier here resolves incidents, and no pagerduty notifier with "
                                "the same routing key under on_failure triggers them; add one there")
            for field_name, notifiers in (("on_recovery", job.on_recovery), ("on_success", job.on_success))
            for index, notifier in enumerate(notifiers)
            if notifier.format == "pagerduty" and notifier.routing_key not in triggers]


def notifier_urls(spec: Any) -> set[str]:
    """Every alert URL of a job (they may carry tokens: Slack/Discord webhooks, ntfy topics, check UUIDs)."""
    urls = {n.url for name in ("on_failure", "on_recovery", "on_success") for n in getattr(spec, name, ())}
    ping = getattr(spec, "ping", None)
    if ping is not None:
        urls.add(ping.url)
    return urls
