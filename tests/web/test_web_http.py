"""The web console over plain HTTP against a real daemon (and ``scheduler web``): access, sessions,
CSRF, security headers, escaping, secrets, the base path and lazy loading in the daemon."""

from __future__ import annotations

import html
import re
import signal
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import ODD_NAME, Site, config_text
from markupsafe import escape
from web_helpers import SECRET, TOKEN, Client, run_cli, wait_until

BEARER = {"Authorization": f"Bearer {TOKEN}"}


def controls(workdir: Path) -> dict[str, tuple[int, str | None]]:
    conn = sqlite3.connect(workdir / "data" / ".scheduler" / "state.db")
    try:
        return {job: (paused, reason) for job, paused, reason in
                conn.execute("SELECT job, paused, reason FROM job_control")}
    finally:
        conn.close()


def runs(workdir: Path, job: str) -> list[tuple[int, str, str]]:
    """``(id, trigger, status)`` of the job's run records, newest first."""
    conn = sqlite3.connect(workdir / "data" / ".scheduler" / "state.db")
    try:
        return list(conn.execute("SELECT id, trigger, status FROM runs WHERE job = ? ORDER BY started_at DESC",
                                 (job,)))
    finally:
        conn.close()


def run_ids(client: Client, job: str) -> list[int]:
    page = client.get(f"/job/{quote(job, safe='')}", headers=BEARER)
    assert page.status == 200, page.text
    return [int(i) for i in re.findall(r'<tr class="run" data-run="(\d+)"', page.text)]


def finished(client: Client, job: str) -> bool:
    ids = run_ids(client, job)
    return bool(ids) and '"running": false' in client.get(f"/run/{ids[0]}/output", headers=BEARER).text


def test_login_sets_a_session_cookie_that_is_not_the_token(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    first = client.get("/")
    assert first.status == 303 and first.header("Location") == "/login"
    assert client.get("/job/printer").header("Location") == "/login?next=%2Fjob%2Fprinter"
    assert client.get("/run/1/output").status == 401  # JSON: no redirect
    login = client.get("/login")
    assert login.status == 200 and 'type="password"' in login.text

    wrong = client.login("not-the-token")
    assert wrong.status == 401 and "Wrong token" in wrong.text and not wrong.all("Set-Cookie")
    assert client.get("/").status == 303

    ok = client.login()
    assert ok.status == 303 and ok.header("Location") == "/"
    [cookie] = ok.all("Set-Cookie")
    attributes = [part.strip() for part in cookie.split(";")]
    name, _, value = attributes[0].partition("=")
    assert name == "scheduler_session" and len(value) >= 32
    assert TOKEN not in cookie
    assert "HttpOnly" in attributes and "SameSite=Lax" in attributes and "Path=/" in attributes

    page = client.get("/")
    assert page.status == 200
    assert 'href="/job/printer"' in page.text and "nightly" in page.text
    csp = page.header("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("X-Frame-Options") == "DENY"
    assert page.header("Cache-Control") == "no-store"
    assert "<script" not in page.text  # the list page has no script at all

    # the cookie was issued by this process: a made-up session id is refused
    forged = Client(site.url)
    forged.cookies["scheduler_session"] = "A" * 43
    assert forged.get("/").status == 303
    token_as_cookie = Client(site.url)
    token_as_cookie.cookies["scheduler_session"] = TOKEN
    assert token_as_cookie.get("/").status == 303

    # logout ends the session on the server: the old cookie value no longer works
    old = dict(client.cookies)
    out = client.post("/logout", {"csrf": page.csrf()})
    assert out.status == 303 and "Max-Age=0" in out.all("Set-Cookie")[0]
    replay = Client(site.url)
    replay.cookies.update(old)
    assert replay.get("/").status == 303


def test_bearer_token_works_for_scripts_and_needs_no_csrf(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status == 303
    assert client.get("/", headers=BEARER).status == 200
    wait_until(lambda: finished(client, "printer"), what="printer's start run to finish")
    [run_id] = run_ids(client, "printer")
    output = client.get(f"/run/{run_id}/output?after=0", headers=BEARER)
    assert output.status == 200 and output.header("Content-Type") == "application/json"
    assert "marker-out-1" in output.text
    assert client.post("/job/nightly/pause", {"reason": "by script"}, headers={"Authorization": "Bearer wrong"}
                       ).status == 401
    assert "nightly" not in controls(site.workdir)
    paused = client.post("/job/nightly/pause", {"reason": "by script"}, headers=BEARER)
    assert paused.status == 303 and paused.header("Location") == "/job/nightly?note=paused"
    assert controls(site.workdir)["nightly"] == (1, "by script")


def test_state_changes_need_the_csrf_token_and_the_same_origin(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    client.login()
    csrf = client.get("/job/nightly").csrf()
    host = site.url.removeprefix("http://")
    refused = [
        client.post("/job/nightly/pause", {"reason": "no token"}),
        client.post("/job/nightly/pause", {"reason": "wrong", "csrf": "x" * len(csrf)}),
        client.post("/job/nightly/pause", {"reason": "foreign", "csrf": csrf},
                    headers={"Origin": "http://evil.example"}),
        client.post("/job/nightly/pause", {"reason": "cross-site", "csrf": csrf},
                    headers={"Sec-Fetch-Site": "cross-site"}),
        client.post("/job/nightly/run", {"csrf": "nope"}),
        client.post("/logout", {}),
    ]
    assert [r.status for r in refused] == [403] * 6
    assert "nightly" not in controls(site.workdir)
    assert client.get("/job/nightly/pause").status == 404  # GET never changes state
    assert "nightly" not in controls(site.workdir)
    # another session's token is not this session's
    other = Client(site.url)
    other.login()
    assert client.post("/job/nightly/pause", {"csrf": other.get("/").csrf()}).status == 403

    done = client.post("/job/nightly/pause", {"reason": "maintenance window", "csrf": csrf},
                       headers={"Origin": f"http://{host}"})
    assert done.status == 303
    assert controls(site.workdir)["nightly"] == (1, "maintenance window")
    listed = run_cli(site.workdir, "list")
    assert re.search(r"nightly \(paused\)", listed.stdout), listed.stdout
    page = client.get("/job/nightly?note=paused")
    assert "maintenance window" in page.text and "Paused." in page.text
    assert client.post("/job/nightly/resume", {"csrf": csrf}).status == 303
    assert controls(site.workdir)["nightly"][0] == 0


def test_output_errors_reasons_and_names_are_escaped(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    client.login()
    wait_until(lambda: finished(client, "printer") and finished(client, "broken"), what="the start runs")
    [run_id] = run_ids(client, "printer")
    run = client.get(f"/run/{run_id}").text
    assert "&lt;script&gt;alert(document.domain)&lt;/script&gt;" in run
    assert "&lt;b&gt;bold&lt;/b&gt;" in run
    assert "<script>alert" not in run and "<b>bold" not in run

    broken = client.get("/job/broken").text
    assert "/nonexistent/&lt;img src=x onerror=alert(1)&gt;" in broken
    assert "<img" not in broken

    csrf = client.get("/").csrf()
    reason = '<img src=x onerror="alert(2)">"quoted"'
    assert client.post("/job/nightly/pause", {"reason": reason, "csrf": csrf}).status == 303
    for page in (client.get("/job/nightly").text, client.get("/").text):
        assert "<img" not in page
        assert str(escape(reason)) in page

    listing = client.get("/").text
    escaped = str(escape(ODD_NAME))
    assert escaped in listing and ODD_NAME not in listing
    odd = client.get("/job/" + quote(ODD_NAME, safe=""))
    assert odd.status == 200 and f'<h1 class="job-title">{escaped}' in odd.text


def test_no_secret_reaches_any_page(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    client.login()
    wait_until(lambda: finished(client, "printer"), what="printer's start run")
    csrf = client.get("/").csrf()
    client.post("/job/printer/pause", {"reason": f"rotating {SECRET}", "csrf": csrf})
    pages = ["/", "/login"]
    index = client.get("/").text
    pages += sorted(set(re.findall(r'href="(/job/[^"]+)"', index)))
    for job_page in list(pages[2:]):
        pages += sorted(set(re.findall(r'href="(/run/\d+)"', client.get(html.unescape(job_page)).text)))
    pages += [p + "/output?after=0" for p in pages if p.startswith("/run/")]
    assert len(pages) > 8
    for path in pages:
        reply = client.get(html.unescape(path))
        assert reply.status == 200, (path, reply.status)
        assert SECRET not in reply.text, path
    printer = client.get("/job/printer").text
    assert "API_PASSWORD: &#39;***&#39;" in printer and "SOURCE_URL: &#39;***&#39;" in printer
    assert "url: &#39;***&#39;" in printer  # the alert URL
    [run_id] = run_ids(client, "printer")
    assert "pw=***" in client.get(f"/run/{run_id}").text
    assert "rotating ***" in printer


def test_without_a_token_the_console_is_disabled(start_site) -> None:
    site: Site = start_site(token=None)
    client = Client(site.url)
    for path in ("/", "/job/printer", "/run/1", "/login"):
        reply = client.get(path)
        assert reply.status == 403 and "web console is disabled" in reply.text
        assert "printer" not in reply.text and "marker" not in reply.text
    assert client.post("/login", {"token": ""}).status == 403
    assert client.get("/static/app.css").status == 200
    assert client.get("/healthz").status == 200


def test_base_path_prefixes_every_link_and_form(start_site) -> None:
    site: Site = start_site(base_path="/ops/scheduler")
    client = Client(site.url)
    first = client.get("/")
    assert first.status == 303 and first.header("Location") == "/ops/scheduler/login"
    login = client.login()
    assert login.header("Location") == "/ops/scheduler/" and "Path=/ops/scheduler" in login.all("Set-Cookie")[0]
    for path in ("/", "/job/printer"):
        page = client.get(path).text
        targets = re.findall(r'(?:href|action|src)="([^"]+)"', page)
        assert targets and all(t.startswith("/ops/scheduler/") for t in targets if t != "data:,"), targets
    assert client.get("/healthz").status == 200
    # a proxy that strips the prefix reaches the same pages (the links still carry it)
    stripped = Client(site.url.removesuffix("/ops/scheduler"))
    stripped.cookies.update(client.cookies)
    page = stripped.get("/job/printer")
    assert page.status == 200 and 'action="/ops/scheduler/job/printer/run"' in page.text


@pytest.mark.parametrize("via", ["daemon", "web"])
def test_run_now_pause_and_resume(start_site, via: str) -> None:
    site: Site = start_site(via)
    client = Client(site.url)
    client.login()
    wait_until(lambda: finished(client, "printer"), what="printer's start run")
    assert [trigger for _, trigger, _ in runs(site.workdir, "printer")] == ["start"]
    csrf = client.get("/").csrf()
    ran = client.post("/job/printer/run", {"csrf": csrf})
    assert ran.status == 303
    location = ran.header("Location") or ""
    assert re.fullmatch(r"/run/\d+|/job/printer\?note=requested", location), location
    # the request runs the job's latest slot: a job without a schedule reruns its one slot's record
    wait_until(lambda: runs(site.workdir, "printer")[0][1:] == ("request", "success"), what="the requested run")
    new = runs(site.workdir, "printer")[0][0]
    page = client.get(f"/run/{new}").text
    assert "marker-out-1" in page and "<dt>Trigger</dt><dd>request" in page
    assert client.post("/job/printer/pause", {"reason": "via " + via, "csrf": csrf}).status == 303
    assert controls(site.workdir)["printer"] == (1, "via " + via)
    status = run_cli(site.workdir, "status", "--json").stdout
    assert f'"paused_reason": "via {via}"' in status
    assert client.post("/job/printer/resume", {"csrf": csrf}).status == 303
    assert controls(site.workdir)["printer"][0] == 0


def test_the_daemon_loads_the_web_modules_on_the_first_page_only(start_site) -> None:
    site: Site = start_site()
    maps = Path(f"/proc/{site.daemon.proc.pid}/maps")
    client = Client(site.url)
    assert client.get("/healthz").status == 200
    assert client.get("/jobs", headers=BEARER).status == 200
    assert "markupsafe" not in maps.read_text()  # Jinja2's C speedups: loaded with Jinja2
    assert client.get("/", headers=BEARER).status == 200
    assert "markupsafe" in maps.read_text()


def test_repeated_wrong_tokens_lock_that_address_out(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    for _ in range(10):
        assert client.login("guess").status == 401
    locked = client.login()
    assert locked.status == 429 and "Too many wrong tokens" in locked.text and not locked.all("Set-Cookie")
    assert client.get("/", headers=BEARER).status == 429  # one lock per address, for the form and Bearer


def test_repeated_wrong_bearer_tokens_lock_that_address_out(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    for _ in range(10):
        assert client.get("/run/1/output", headers={"Authorization": "Bearer guess"}).status == 401
    assert client.get("/", headers=BEARER).status == 429  # guessing is refused before any compare
    assert client.login().status == 429


def test_a_reloaded_token_applies_at_once_to_the_pages_and_the_job_api(start_site) -> None:
    site: Site = start_site()
    client = Client(site.url)
    assert client.get("/jobs", headers=BEARER).status == 200
    new = {"Authorization": "Bearer rotated-token-5e21"}
    text = config_text(site.workdir).replace(f"api_token: {TOKEN}", "api_token: rotated-token-5e21")
    (site.workdir / "scheduler.yaml").write_text(text, encoding="utf-8")
    site.daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: client.get("/jobs", headers=new).status == 200, what="the new token to work")
    assert client.get("/jobs", headers=BEARER).status == 401
    assert client.get("/run/1/output", headers=BEARER).status == 401
    assert client.get("/", headers=new).status == 200
