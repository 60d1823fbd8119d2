"""Fixtures for the web console tests: a real daemon (and, for ``scheduler web``, a second
process on the same state store) on a config with jobs that print known markers, and Debian's
Chromium driven by Playwright (tests marked ``browser`` skip without them; under ``CI=true`` such
a skip fails, see ``tests/conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web_helpers import SECRET, TOKEN, Proc

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ODD_NAME = "<i>odd</i> & name"


def config_text(workdir: Path, base_path: str = "", token: str | None = TOKEN) -> str:
    """Jobs: ``printer`` (runs at start, prints markers, a ``<script>`` and secrets in env),
    ``gated`` (runs until the file ``gate`` exists), ``nightly`` (cron in Berlin, fails), a job
    whose name holds HTML, and ``broken`` (cannot start; its error holds HTML)."""
    http = ["  listen: 127.0.0.1:0"]
    if token:
        http.append(f"  api_token: {token}")
    if base_path:
        http.append(f"  base_path: {base_path}")
    return "\n".join(["http:", *http, f"""
jobs:
  printer:
    kind: command
    description: prints known markers
    run_on_start: true
    shell: >-
      echo "marker-out-1 <script>alert(document.domain)</script>";
      echo "marker-err-1 <b>bold</b>" >&2; echo "pw=$API_PASSWORD"
    env:
      API_PASSWORD: {SECRET}
      SOURCE_URL: "https://user:{SECRET}@db.example.com/x"
    on_failure: [{{url: "https://hooks.example.com/services/{SECRET}", format: slack}}]
  gated:
    kind: command
    shell: 'echo gated-start; while [ ! -f {workdir / "gate"} ]; do sleep 0.05; done; echo gated-end'
  nightly:
    kind: command
    schedule: "0 2 * * 1-5"
    timezone: Europe/Berlin
    shell: "exit 3"
  "{ODD_NAME}":
    kind: command
    shell: "echo odd"
  broken:
    kind: command
    run_on_start: true
    command: ["/nonexistent/<img src=x onerror=alert(1)>"]
"""])


@dataclass
class Site:
    """A daemon, and when ``via == "web"`` a ``scheduler web`` process; ``url`` is the pages' root
    (with the base path)."""

    workdir: Path
    daemon: Proc
    web: Proc | None
    url: str
    via: str


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.fixture
def start_site(workdir: Path) -> Iterator[Callable[..., Site]]:
    started: list[Proc] = []

    def start(via: str = "daemon", base_path: str = "", token: str | None = TOKEN) -> Site:
        (workdir / "scheduler.yaml").write_text(config_text(workdir, base_path, token), encoding="utf-8")
        daemon = Proc(["run"], workdir)
        started.append(daemon)
        root = daemon.url("http endpoint listening")
        web = None
        if via == "web":
            web = Proc(["web", "--listen", "127.0.0.1:0"], workdir)
            started.append(web)
            root = web.url("web console listening")
        return Site(workdir, daemon, web, root + base_path, via)

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's), shared by a module's tests."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
