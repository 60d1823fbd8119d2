"""Screenshots of the web console for the README, taken by Chromium from a real daemon.

    .venv/bin/python scripts/web_screenshots.py [--out docs/screenshots] [--runs 12]

Starts the bundled sample sales API and ``scheduler run`` on demo jobs in a temporary directory
(an ingest job every few seconds, a command job that sometimes fails, a nightly cron job in
Berlin, a paused job), waits until ``--runs`` runs have finished, then drives Debian's Chromium
(``/usr/bin/chromium``, through Playwright) to log in and write ``jobs.png``, ``job.png``,
``run.png`` and ``jobs-phone.png``.  Everything listens on 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "demo-console-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def config(api: str, workdir: Path) -> str:
    return json.dumps({
        "http": {"listen": "127.0.0.1:0", "api_token": TOKEN},
        "jobs": {
            "daily_sales": {
                "kind": "ingest", "description": "Sales from the sales API to Parquet", "every": "4s",
                "source": {"base_url": api, "path": "/v1/sales", "params": {"date": "{logical_date}"},
                           "pagination": {"type": "page_number", "page_param": "page", "size_param": "per_page",
                                          "page_size": 500, "total_pages_path": "total_pages"},
                           "records": "data"},
                "transform": [{"flatten": True}, {"parse_number": ["unit_price"]},
                              {"cast": {"quantity": "int", "store_id": "int"}},
                              {"dedupe": {"columns": ["order_id"], "keep": "first"}},
                              {"select": ["order_id", "sold_at", "store_id", "sku", "quantity", "unit_price",
                                          "currency"]}],
                "checks": {"not_null": ["order_id", "sku"], "ranges": {"quantity": {"min": -1000, "max": 1000}},
                           "max_reject_ratio": 0.2},
                "sink": {"dataset": "sales", "rejects": "sales_rejects", "mode": "replace_partition",
                         "schema": {"order_id": "string", "sold_at": "string", "store_id": "int", "sku": "string",
                                    "quantity": "int", "unit_price": "float", "currency": "string"}},
            },
            "refresh_report": {
                "kind": "command", "description": "Rebuilds the dashboard extract", "every": "3s",
                "command": ["bash", "-c", "echo building extract; sleep 0.$((RANDOM % 9 + 1)); "
                            "if [ $((RANDOM % 4)) -eq 0 ]; then echo 'upstream returned 502' >&2; exit 2; fi; "
                            "echo wrote 1 extract"],
            },
            "nightly_export": {
                "kind": "command", "description": "Exports the warehouse tables", "schedule": "30 2 * * 1-5",
                "timezone": "Europe/Berlin", "shell": "echo export",
            },
            "cleanup_tmp": {"kind": "command", "schedule": "0 */6 * * *", "shell": f"find {workdir} -name '*.tmp'"},
        },
    }, indent=1)


def finished_runs(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs WHERE status != 'running'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def shoot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--runs", type=int, default=12, help="finished runs to wait for before the screenshots")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="web-shots-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[str]] = []
    try:
        api = subprocess.Popen([sys.executable, "-m", "scheduler.sample.api", "--port", "0", "--records-per-day",
                                "1200"], env=env, stdout=subprocess.PIPE, text=True)
        procs.append(api)
        assert api.stdout is not None
        api_url = api.stdout.readline().strip()
        (workdir / "scheduler.yaml").write_text(config(api_url, workdir))
        log = workdir / "daemon.log"
        with open(log, "w") as out:
            daemon = subprocess.Popen([sys.executable, "-m", "scheduler", "run", "--config", "scheduler.yaml",
                                       "--data-dir", "data", "--log-format", "json"],
                                      cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        procs.append(daemon)

        def listening() -> str | None:
            for line in log.read_text().splitlines():
                if '"http endpoint listening"' in line:
                    return str(json.loads(line)["listen"])
            return None

        url = "http://" + wait_for(listening, 60, "the daemon's endpoint")
        pause = subprocess.run([sys.executable, "-m", "scheduler", "pause", "cleanup_tmp", "--reason",
                                "disk migration until Friday", "--config", "scheduler.yaml", "--data-dir", "data"],
                               cwd=workdir, env=env, capture_output=True, text=True, check=False)
        assert pause.returncode == 0, pause.stderr
        wait_for(lambda: finished_runs(workdir / "data" / ".scheduler" / "state.db") >= args.runs, 300,
                 f"{args.runs} finished runs")
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for name, viewport in (("", {"width": 1280, "height": 720}), ("-phone", {"width": 390, "height": 844})):
                context = browser.new_context(viewport=viewport, device_scale_factor=1)
                page = context.new_page()
                page.goto(url + "/login")
                page.fill("#token", TOKEN)
                page.click("button[type=submit]")
                page.wait_for_selector("table.jobs")
                shoot(page, args.out / f"jobs{name}.png")
                if name:
                    context.close()
                    continue
                page.goto(url + "/job/daily_sales")
                page.wait_for_selector("figure.chart")
                shoot(page, args.out / "job.png")
                page.goto(url + "/job/refresh_report")
                page.click("table.history tr.run:has(.s-failed) a")
                page.wait_for_selector("#output")
                shoot(page, args.out / "run.png")
                context.close()
            browser.close()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
