"""The web console in a real browser (Debian's Chromium, driven by Playwright) against a real
daemon, and against ``scheduler web`` beside one: log in, read the job list, a job and a run,
run now, follow a run live, pause and resume, escaping, phone width, no JavaScript."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Site
from web_helpers import TOKEN, png_colours, run_cli, wait_until

pytestmark = pytest.mark.browser
SITES = [("daemon", "/scheduler"), ("web", "")]


def controls(workdir: Path) -> dict[str, int]:
    conn = sqlite3.connect(workdir / "data" / ".scheduler" / "state.db")
    try:
        return dict(conn.execute("SELECT job, paused FROM job_control").fetchall())
    finally:
        conn.close()


def log_in(page: Any, site: Site) -> None:
    page.goto(site.url + "/")
    assert page.url.endswith("/login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("table.jobs")


def screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert png_colours(path) > 20, f"{path.name} looks blank"


def reload_until(page: Any, probe: Any, what: str) -> None:
    def check() -> bool:
        page.reload()
        return bool(probe())

    wait_until(check, 30, what, interval=0.3)


@pytest.mark.parametrize(("via", "base_path"), SITES)
def test_operator_flow_in_a_browser(chromium: Any, start_site: Any, tmp_path: Path, via: str, base_path: str) -> None:
    site: Site = start_site(via, base_path=base_path)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # log in: a wrong token is refused, the right one opens the job list
    page.goto(site.url + "/")
    assert page.url == site.url + "/login"
    page.fill("#token", "wrong-token")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text() == "Wrong token."
    assert errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    errors.clear()
    log_in(page, site)
    assert page.url == site.url + "/"

    # the job list: schedule in words and cron, timezone, next three fire times with UTC on hover
    nightly = page.locator("tr[data-job=nightly]")
    assert "At 02:00, Monday through Friday" in nightly.inner_text()
    assert "0 2 * * 1-5" in nightly.inner_text() and "Europe/Berlin" in nightly.inner_text()
    times = nightly.locator("td.next time")
    assert times.count() == 3
    assert times.first.inner_text().endswith(("CET", "CEST"))
    assert times.first.get_attribute("title").endswith("UTC")
    reload_until(page, lambda: page.locator("tr[data-job=printer] .strip .cell.s-success").count() == 1,
                 "printer's start run in the strip")
    screenshot(page, tmp_path / "list.png")

    # a job page, then its run and the run's output, a <script> shown as text
    page.click("tr[data-job=printer] a.job-name")
    page.wait_for_selector("details.spec")
    page.click("details.spec summary")  # the spec is folded away until asked for
    assert "API_PASSWORD: '***'" in page.locator("pre.spec").inner_text()
    assert page.locator("figure.chart svg rect.bar").count() == 1
    screenshot(page, tmp_path / "job.png")
    page.click("table.history tr.run a")
    output = page.locator("#output")
    output.wait_for()
    assert "marker-out-1 <script>alert(document.domain)</script>" in output.inner_text()
    assert "marker-err-1 <b>bold</b>" in output.inner_text()
    assert page.locator("#output script, #output b").count() == 0
    screenshot(page, tmp_path / "run.png")

    # run now: lands on the new run, which appears in the job's history with trigger "request"
    page.goto(site.url + "/job/gated")
    page.click("button:has-text('Run now')")
    page.wait_for_selector("#output")
    assert "/run/" in page.url
    # live: the page follows the output (JavaScript polling) until the run ends
    # (the CSP forbids eval, so waits use locators, not wait_for_function)
    page.locator("#output span.line", has_text="gated-start").wait_for()
    (site.workdir / "gate").touch()
    page.locator("#output span.line", has_text="gated-end").wait_for(timeout=30_000)
    page.wait_for_selector("#run-status .s-success", timeout=30_000)
    page.goto(site.url + "/job/gated")
    first_row = page.locator("table.history tr.run").first
    assert "request" in first_row.inner_text() and "success" in first_row.inner_text()

    # pause with a reason holding HTML (shown as text), seen by the CLI; then resume
    page.fill("input[name=reason]", "<b>deploy</b> window")
    page.click("button:has-text('Pause')")
    page.wait_for_selector(".paused-note")
    assert page.locator(".paused-note .reason").inner_text() == "<b>deploy</b> window"
    assert page.locator(".paused-note b").count() == 0
    assert controls(site.workdir)["gated"] == 1
    assert json.loads(run_cli(site.workdir, "list", "--json").stdout)[1]["paused"] is True
    page.goto(site.url + "/")
    assert page.locator("tr[data-job=gated] .badge.paused").count() == 1
    page.click("tr[data-job=gated] a.job-name")
    page.click("button:has-text('Resume')")
    page.wait_for_selector("p.note")
    assert page.locator(".paused-note").count() == 0 and controls(site.workdir)["gated"] == 0

    # log out: back to the login form, and the pages are closed again
    page.click("header button:has-text('Log out')")
    page.wait_for_selector("#token")
    page.goto(site.url + "/")
    assert page.url.endswith("/login")
    assert dialogs == [] and errors == []
    context.close()


@pytest.mark.parametrize(("via", "base_path"), SITES[:1])
def test_phone_width_and_no_javascript(chromium: Any, start_site: Any, tmp_path: Path, via: str,
                                       base_path: str) -> None:
    site: Site = start_site(via, base_path=base_path)
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, java_script_enabled=False)
    page = context.new_page()
    log_in(page, site)  # the login form is a plain form: no script needed
    reload_until(page, lambda: page.locator("tr[data-job=printer] .strip .cell").count() == 1, "printer's run")
    page.goto(site.url + "/job/gated")
    page.click("button:has-text('Run now')")  # a plain form post, then a redirect to the run
    page.wait_for_selector("#output")
    assert page.locator("#live-hint").inner_text().startswith("This run is still running")
    run_url = page.url
    for name, url in (("list", "/"), ("job", "/job/printer"), ("run", run_url)):
        page.goto(url if url.startswith("http") else site.url + url)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} page scrolls sideways by {overflow}px at phone width"
        screenshot(page, tmp_path / f"phone-{name}.png")
    assert "gated-start" in page.locator("#output").inner_text()
    (site.workdir / "gate").touch()
    context.close()
