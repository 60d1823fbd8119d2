"""The one masker: every form of a known secret and every credential shape it hides, as a table.

The same :class:`~scheduler.redaction.Redactor` masks log events (through structlog), stored
errors (the runner), alert payloads and ingest's errors and log lines; these tests pin what it
masks and what it leaves alone.
"""

from __future__ import annotations

import base64
import io
import json
from urllib.parse import quote, quote_plus

import pytest

from scheduler.kinds.ingest.http import source_redactor
from scheduler.kinds.ingest.spec_source import Source
from scheduler.logs import configure, get_logger
from scheduler.redaction import MASK, Redactor, redact_all, secret_forms

SECRET = "s3cr3t pass/wörd+?~>"  # a space, reserved and non-ASCII characters: every form differs
RAW = SECRET.encode()
STD_B64 = base64.b64encode(RAW).decode()
URL_B64 = base64.urlsafe_b64encode(RAW).decode()


def test_the_forms_differ_from_each_other() -> None:
    # otherwise the table below would not show that each form is masked on its own
    forms = [SECRET, quote(SECRET, safe=""), quote_plus(SECRET), STD_B64.rstrip("="), URL_B64.rstrip("=")]
    assert len(set(forms)) == len(forms)
    assert secret_forms(SECRET) == set(forms)


@pytest.mark.parametrize(("text", "expected"), [
    # a known secret, in each form it travels in
    (f"token is {SECRET}!", "token is ***!"),
    (f"GET /x?q={quote(SECRET, safe='')}&page=2", "GET /x?q=***&page=2"),
    (f"form body q={quote_plus(SECRET)}&page=2", "form body q=***&page=2"),
    (f"payload {STD_B64} end", "payload ***= end" if STD_B64.endswith("=") else "payload *** end"),
    (f"payload {STD_B64.rstrip('=')} end", "payload *** end"),
    (f"cookie={URL_B64.rstrip('=')};", "cookie=***;"),
    (f"twice: {SECRET} and {SECRET}", "twice: *** and ***"),
    # credential-shaped text, masked although no secret is known for it
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ('{"authorization": "Token abc123"}', '{"authorization": "Token ***"}'),
    ("sent bearer eyJhbGciOiJIUzI1NiJ9.e30.x-y_z", "sent bearer ***"),
    ("https://api.example/v1?api_key=k-123&page=2", "https://api.example/v1?api_key=***&page=2"),
    ("https://api.example/v1?page=2&access_token=t0k3n", "https://api.example/v1?page=2&access_token=***"),
    ("https://h/x?a=1;password=hunter22", "https://h/x?a=1;password=***"),
    ("signed: https://bucket/obj?X=1&sig=abc%2Fdef", "signed: https://bucket/obj?X=1&sig=***"),
    ("postgresql://app:pa55word@db:5432/state", "postgresql://app:***@db:5432/state"),
    # left alone: ordinary text, short values, parameters that only end in a secret-like name
    ("nothing secret here", "nothing secret here"),
    ("the key is abc", "the key is abc"),
    ("https://api.example/v1?page_token=abc&monkey=1", "https://api.example/v1?page_token=abc&monkey=1"),
])
def test_masked_forms(text: str, expected: str) -> None:
    redactor = Redactor([SECRET, "abc"])  # "abc" is shorter than the minimum: never a known secret
    assert redactor(text) == expected
    assert redactor.redact(expected) == expected  # idempotent


def test_a_secret_containing_another_is_hidden_whole() -> None:
    redactor = Redactor(["abcd", "xxabcdxx"])
    assert redactor("value xxabcdxx and abcd") == "value *** and ***"


def test_secrets_can_be_replaced() -> None:
    redactor = Redactor(["first-secret"])
    redactor.set_secrets(["second-secret"])
    assert redactor("first-secret second-secret") == "first-secret ***"


def test_nested_values_and_exceptions_are_masked() -> None:
    redactor = Redactor([SECRET])
    value = {"error": f"failed with {SECRET}", "lines": [SECRET, ("t", STD_B64)], "count": 3,
             "exc": RuntimeError(f"boom {quote(SECRET, safe='')}")}
    masked = redactor.redact_all(value)
    assert masked["error"] == "failed with ***" and masked["lines"][0] == MASK
    assert isinstance(masked["lines"][1], tuple) and STD_B64.rstrip("=") not in masked["lines"][1][1]
    assert masked["count"] == 3 and masked["exc"] == "RuntimeError: boom ***"
    assert redact_all(value, redactor) == masked  # the function form, as alerts and the HTTP endpoint use it


def test_log_events_are_masked_in_every_form() -> None:
    stream = io.StringIO()
    configure("debug", "json", [SECRET], stream=stream)
    get_logger().info("calling", url=f"https://h/x?q={quote_plus(SECRET)}", header=f"Basic {STD_B64}",
                      extra={"nested": [URL_B64]})
    line = stream.getvalue().strip()
    event = json.loads(line)
    assert event["url"] == "https://h/x?q=***"
    assert event["header"].startswith("Basic ***")
    for form in secret_forms(SECRET):
        assert form not in line


def test_ingest_masks_its_sources_credentials() -> None:
    source = Source.model_validate({
        "base_url": "https://api.example", "path": "/v1/sales",
        "auth": {"type": "basic", "username": "svc", "password": "pw-0001"},
        "headers": {"X-Api-Token": "Token tok-9876", "Accept": "application/json"},
    })
    redact = source_redactor(source)
    basic = base64.b64encode(b"svc:pw-0001").decode()
    assert redact(f"Authorization: Basic {basic}") == "Authorization: Basic ***"
    assert redact(f"sent {basic}") == "sent ***"  # the encoded user:password alone
    assert redact("echo: tok-9876 / Token tok-9876") == "echo: *** / ***"
    assert redact("password pw-0001 quoted pw-0001") == "password *** quoted ***"
    assert redact("Accept: application/json") == "Accept: application/json"  # a plain header is no secret
