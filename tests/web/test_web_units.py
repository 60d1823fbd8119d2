"""The web console's pure parts: sessions and their limits (with a fake clock), the origin check,
the login throttle, schedules in words, the masked spec and the chart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.config.loader import load_config
from scheduler.redaction import Redactor
from scheduler.schedule import Schedule
from scheduler.state import RunRecord
from scheduler.status import RunStatus
from scheduler.web import auth
from scheduler.web.app import is_id, local_target
from scheduler.web.chart import build_chart
from scheduler.web.spec import masked_spec, spec_yaml
from scheduler.web.wire import Request, Response, checked, strip_base
from scheduler.web.words import describe, interval_words


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(headers: dict[str, str] | None = None, form: dict[str, list[str]] | None = None) -> Request:
    return Request("POST", "/job/x/pause", {}, {k.lower(): v for k, v in (headers or {}).items()}, form or {})


def test_sessions_end_when_idle_too_long_too_old_or_the_token_changes() -> None:
    clock = FakeClock()
    sessions = auth.Sessions(clock)
    sid, session = sessions.open("token-a")
    assert sessions.get(sid, "token-a") is session
    assert sessions.get(sid, None) is None
    assert sessions.get("someone-else", "token-a") is None
    clock.now += auth.IDLE_LIMIT - 1
    assert sessions.get(sid, "token-a") is session  # used: idle time starts again
    clock.now += auth.IDLE_LIMIT - 1
    assert sessions.get(sid, "token-a") is session
    clock.now += auth.ABSOLUTE_LIMIT
    assert sessions.get(sid, "token-a") is None and len(sessions) == 0
    sid, _ = sessions.open("token-a")
    assert sessions.get(sid, "token-b") is None  # the token changed: the session is gone for good
    assert sessions.get(sid, "token-a") is None
    sid, _ = sessions.open("token-a")
    sessions.close(sid)
    assert sessions.get(sid, "token-a") is None


def test_sessions_are_bounded_and_ids_and_csrf_tokens_are_random() -> None:
    clock = FakeClock()
    sessions = auth.Sessions(clock)
    opened = []
    for _ in range(auth.MAX_SESSIONS + 5):
        clock.now += 1
        opened.append(sessions.open("t"))
    assert len(sessions) == auth.MAX_SESSIONS
    assert sessions.get(opened[0][0], "t") is None and sessions.get(opened[-1][0], "t") is not None
    assert len({sid for sid, _ in opened}) == len(opened) and len({s.csrf for _, s in opened}) == len(opened)
    assert all(len(sid) >= 43 for sid, _ in opened)


@pytest.mark.parametrize(("headers", "same"), [
    ({}, True),
    ({"Host": "h:1", "Origin": "http://h:1"}, True),
    ({"Host": "h:1", "Origin": "https://h:1/"}, True),
    ({"Host": "h:1", "Origin": "http://evil:1"}, False),
    ({"Host": "h:1", "Origin": "null"}, False),
    ({"Host": "h:1", "Sec-Fetch-Site": "cross-site"}, False),
    ({"Host": "h:1", "Sec-Fetch-Site": "same-site"}, False),
    ({"Host": "h:1", "Sec-Fetch-Site": "same-origin", "Origin": "http://h:1"}, True),
    ({"Host": "internal:8081", "X-Forwarded-Host": "ops.example.com", "Origin": "https://ops.example.com"}, True),
])
def test_same_origin(headers: dict[str, str], same: bool) -> None:
    assert auth.same_origin(request(headers)) is same


def test_csrf_and_token_checks() -> None:
    _, session = auth.Sessions().open("tok")
    assert auth.csrf_ok(request(form={"csrf": [session.csrf]}), session)
    assert not auth.csrf_ok(request(form={"csrf": ["x"]}), session)
    assert not auth.csrf_ok(request(), session)
    assert auth.token_matches("tok", "tok") and not auth.token_matches("to", "tok")
    assert not auth.token_matches("", None) and not auth.token_matches("", "")
    assert auth.bearer(request({"Authorization": "Bearer  tok "})) == "tok"
    assert auth.bearer(request({"Authorization": "Basic dG9r"})) == ""


def test_login_throttle_per_client_address() -> None:
    clock = FakeClock()
    throttle = auth.LoginThrottle(clock)
    for _ in range(auth.LOGIN_FAILURES):
        assert not throttle.blocked("10.0.0.1")
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    clock.now += auth.LOGIN_WINDOW
    assert not throttle.blocked("10.0.0.1")


def test_the_throttle_forgets_the_addresses_seen_longest_ago_never_the_guessing_one(monkeypatch) -> None:
    monkeypatch.setattr(auth, "MAX_TRACKED", 20)
    throttle = auth.LoginThrottle(FakeClock())
    for _ in range(auth.LOGIN_FAILURES):
        throttle.failed("guesser")
    for n in range(100):  # a flood of other addresses
        throttle.failed(f"10.0.0.{n}")
        throttle.failed("guesser")
    assert throttle.blocked("guesser")


@pytest.mark.parametrize(("target", "kept"), [
    ("/job/nightly", True), ("/run/12?x=1&y=%2F", True), ("/", True), ("", False),
    ("//evil.example", False), ("/\t/evil.example", False), ("/%09/ok-encoded", True),
    ("/x\r\nSet-Cookie: a=b", False), ("https://evil.example/", False), ("/\\evil.example", False),
    ("/\u20ac", False), ("job/x", False),
])
def test_login_sends_the_browser_only_to_plain_paths_of_this_site(target: str, kept: bool) -> None:
    assert local_target(target) == (target if kept else "/")


@pytest.mark.parametrize(("text", "ok"), [("1", True), ("123456789012345678", True),
                                           ("1234567890123456789", False), ("\u00b2", False), ("-1", False),
                                           ("", False), ("1e3", False)])
def test_run_ids_are_short_ascii_digits(text: str, ok: bool) -> None:
    assert is_id(text) is ok


def test_header_values_with_control_or_non_ascii_characters_are_never_sent() -> None:
    assert checked(Response(303, headers={"Location": "/job/x"})).status == 303
    for bad in ("/x\r\nSet-Cookie: a=b", "/\u20ac", "/\x7f"):
        with pytest.raises(ValueError):
            checked(Response(303, headers={"Location": bad}))
    with pytest.raises(ValueError):
        checked(Response(200, cookies=["a=b\nc"]))


def test_an_overlong_cookie_header_is_ignored_unparsed() -> None:
    assert request({"Cookie": "scheduler_session=abc"}).cookie("scheduler_session") == "abc"
    slow = 'a="' + '\\"' * 30_000 + '"; scheduler_session=abc'  # slow for http.cookies' parser
    assert request({"Cookie": slow}).cookie("scheduler_session") is None


def test_cookie_attributes_and_base_path_stripping() -> None:
    cookie = auth.session_cookie("abc", "/ops", secure=True)
    assert cookie == "scheduler_session=abc; Path=/ops; HttpOnly; SameSite=Lax; Secure"
    assert "Max-Age=0" in auth.session_cookie("", "", secure=False, max_age=0)
    assert strip_base("/ops/job/x", "/ops") == "/job/x"
    assert strip_base("/ops", "/ops") == "/"
    assert strip_base("/opsx/job", "/ops") == "/opsx/job"
    assert strip_base("/job/x", "") == "/job/x"


@pytest.mark.parametrize(("schedule", "after", "words", "expression"), [
    (Schedule(cron="0 2 * * *"), (), "At 02:00", "0 2 * * *"),
    (Schedule(cron="*/15 * * * *"), (), "Every 15 minutes", "*/15 * * * *"),
    (Schedule(cron="30 0 6 * * 1-5"), (), "At 06:00:30, Monday through Friday", "30 0 6 * * 1-5"),
    (Schedule(cron="@daily"), (), "At 00:00", "@daily"),
    (Schedule(cron="0 9 1 * mon"), (), "At 09:00, on day 1 of the month, or on Monday",
     "0 9 1 * mon"),
    (Schedule(every=timedelta(seconds=10)), (), "Every 10 seconds", "every 10s"),
    (Schedule(every=timedelta(hours=1)), ("extract",), "Every hour; also after extract", "every 1h"),
    (Schedule(), ("a", "b"), "After a, b", "-"),
    (Schedule(), (), "Only when triggered", "-"),
])
def test_schedules_in_words(schedule: Schedule, after: tuple[str, ...], words: str, expression: str) -> None:
    text = describe(schedule, after)
    assert (text.words, text.expression) == (words, expression)


def test_interval_words() -> None:
    assert interval_words(timedelta(minutes=90)) == "Every 1 hour 30 minutes"
    assert interval_words(timedelta(days=1)) == "Every day"
    assert interval_words(timedelta(seconds=1)) == "Every second"


def test_the_spec_masks_env_headers_params_secret_keys_alert_urls_and_known_secrets(tmp_path: Path) -> None:
    secret = "s3cr3t-marker-0a1b"
    path = tmp_path / "jobs.yaml"
    path.write_text(f"""
jobs:
  pull:
    kind: ingest
    schedule: "0 3 * * *"
    source:
      base_url: https://user:{secret}@api.example.com
      path: /v1/items?api_key={secret}
      auth: {{type: bearer, token: {secret}}}
      headers: {{Cookie: "sessionid={secret}", X-Auth: "{secret}", Accept: application/json}}
      params: {{sig: "{secret}", per_page: 500}}
      records: data
    sink: {{dataset: items, schema: {{id: string}}}}
    env: {{PLAIN: not-a-secret-but-masked}}
    on_failure: [{{url: "https://hooks.example.com/{secret}", format: slack}}]
    ping: https://hc-ping.com/{secret}
""", encoding="utf-8")
    config = load_config(path)
    text = spec_yaml(config.jobs["pull"], Redactor(config.secrets).redact)
    assert secret not in text and "not-a-secret" not in text
    spec = masked_spec(config.jobs["pull"], Redactor().redact)  # even without knowing the secrets
    assert spec["env"] == {"PLAIN": "***"}
    assert spec["source"]["auth"]["token"] == "***"
    assert spec["source"]["headers"] == {"Cookie": "***", "X-Auth": "***", "Accept": "application/json"}
    assert spec["source"]["params"] == {"sig": "***", "per_page": "500"}
    assert spec["on_failure"][0]["url"] == "***" and spec["ping"]["url"] == "***"
    assert spec["source"]["base_url"] == "https://user:***@api.example.com"
    assert spec["source"]["path"] == "/v1/items?api_key=***"
    assert spec["schedule"] == "0 3 * * *" and spec["sink"]["dataset"] == "items"


def record(run_id: int, status: RunStatus, duration: float | None, rows: int | None) -> RunRecord:
    t = datetime(2026, 12, 1, 2, 0, tzinfo=UTC) + timedelta(days=run_id)
    return RunRecord(id=run_id, job="j", slot=t, logical_date=date(2026, 12, 1), trigger="schedule", attempt=1,
                     status=status, exit_code=0, signal=None, started_at=t, ended_at=t, duration=duration, rows=rows,
                     metrics={}, error=None)


def test_chart_scales_each_series_and_leaves_out_runs_that_did_not_run() -> None:
    newest_first = [record(5, RunStatus.RUNNING, None, None), record(4, RunStatus.SUCCESS, 2.0, 100),
                    record(3, RunStatus.SKIPPED, None, None), record(2, RunStatus.FAILED, 4.0, None),
                    record(1, RunStatus.SUCCESS, 1.0, 50)]
    chart = build_chart(newest_first)
    assert chart is not None
    assert [b.status for b in chart.bars] == ["success", "failed", "success"]  # oldest first
    heights = [b.height for b in chart.bars]
    assert heights[1] == max(heights) and heights[0] == pytest.approx(heights[1] / 4)
    assert [p.title for p in chart.points] == ["run 1: 50 rows", "run 4: 100 rows"]
    assert chart.points[1].y < chart.points[0].y  # more rows, higher
    assert chart.max_duration == "4.0s" and chart.max_rows == "100"
    assert build_chart([record(1, RunStatus.SKIPPED, None, None)]) is None
