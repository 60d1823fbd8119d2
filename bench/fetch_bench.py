"""CPU per page of the ingest HTTP client against a client-bound floor, in one go.

``bench/memory_api.py`` serves pre-rendered pages (``--per-page`` records each, about 217 KB at
1,000) from a process of its own, so the measured client is the bottleneck.  In this process,
each leg fetches every page over one kept-alive connection; the legs take turns for ``--rounds``
rounds (so a burst of load elsewhere on the machine hits them alike) and the median round is
reported as CPU milliseconds per page (``time.process_time``: user+sys of this process):

- ``http.client`` and ``urllib3``: the bare libraries, reading the whole body (references);
- ``requests``: ``requests.Session().get(...).content``, the HTTP floor;
- ``requests+json``: the same plus ``json.loads``, the ingest benchmark's floor per page;
- ``fetch``: ``Fetcher.fetch``, the raw body with retries, rate limit, deadline and redaction armed;
- ``get``: ``Fetcher.get``, ``fetch`` plus JSON parsing.

Usage::

    python bench/fetch_bench.py                       # 200 pages of 1,000 records, 5 rounds
    python bench/fetch_bench.py --pages 500 --rounds 7 --json fetch.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import requests
import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.kinds.ingest.http import Fetcher, source_redactor  # noqa: E402 - after the path set-up above
from scheduler.kinds.ingest.spec_source import Source  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from ingest_bench import start_api  # noqa: E402 - the same memory-served API

DAY = "2026-11-05"
Leg = Callable[[int], int]  # fetch page N, return its size in bytes


class _QuietLog:
    """The fetcher's logger: nothing is retried against the memory API, so nothing is logged."""

    def warning(self, event: str, **fields: object) -> None:
        print(event, file=sys.stderr)


def legs(url: str, per_page: int) -> tuple[dict[str, Leg], list[Callable[[], None]]]:
    """Every leg, each with its own client (and connection), and how to close them."""
    path = "/v1/sales"

    def query(page: int) -> dict[str, str]:
        return {"date": DAY, "page": str(page), "per_page": str(per_page)}

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def bare(page: int) -> int:
        conn.request("GET", f"{path}?{urlencode(query(page))}", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return len(resp.read())

    pool = urllib3.HTTPConnectionPool(parts.hostname, parts.port, maxsize=1, timeout=60.0, retries=False)

    def pooled(page: int) -> int:
        return len(pool.request("GET", path, fields=query(page), headers={"Accept": "application/json"}).data)

    session = requests.Session()

    def floor(page: int) -> int:
        return len(session.get(url + path, params=query(page), timeout=60).content)

    floor_session = requests.Session()

    def floor_json(page: int) -> int:
        content = floor_session.get(url + path, params=query(page), timeout=60).content
        return len(json.loads(content)["data"]) and len(content)

    source = Source.model_validate({"base_url": url, "path": path, "params": {"date": DAY}, "deadline": "1h"})
    fetcher = Fetcher(source, source_redactor(source), _QuietLog())
    parsing = Fetcher(source, source_redactor(source), _QuietLog())

    def fetch(page: int) -> int:
        return fetcher.fetch(url + path, query(page), {}).nbytes

    def get(page: int) -> int:
        result = parsing.get(url + path, query(page), {})
        return len(result.body["data"]) and result.nbytes

    closers: list[Callable[[], None]] = [conn.close, pool.close, session.close, floor_session.close,
                                         fetcher.close, parsing.close]
    return {"http.client": bare, "urllib3": pooled, "requests": floor, "requests+json": floor_json,
            "fetch": fetch, "get": get}, closers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--per-page", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    api, url = start_api("memory", args.pages * args.per_page, args.per_page)
    per_page: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    try:
        clients, closers = legs(url, args.per_page)
        for leg in clients.values():  # warm-up: connections opened, code paths and caches hot
            for page in range(1, 6):
                leg(page)
        for _ in range(args.rounds):
            for name, leg in clients.items():
                total = 0
                started = time.process_time()
                for page in range(1, args.pages + 1):
                    total += leg(page)
                per_page.setdefault(name, []).append((time.process_time() - started) * 1000 / args.pages)
                sizes[name] = total
        for close in closers:
            close()
    finally:
        api.terminate()
        api.wait(timeout=10)
    if len(set(sizes.values())) != 1:
        raise SystemExit(f"the legs read different byte counts: {sizes}")
    floor = statistics.median(per_page["requests"])
    print(f"pages={args.pages} per_page={args.per_page} page_kb={sizes['requests'] / args.pages / 1000:.0f} "
          f"rounds={args.rounds} cpus={os.cpu_count()} load_1m={os.getloadavg()[0]:.2f}")
    print(f"{'leg':<14} {'ms cpu/page':>12} {'min':>7} {'max':>7} {'x requests':>11}")
    results = {}
    for name, values in per_page.items():
        median = statistics.median(values)
        results[name] = {"ms_cpu_per_page": round(median, 3), "min": round(min(values), 3),
                         "max": round(max(values), 3), "x_requests": round(median / floor, 2)}
        print(f"{name:<14} {median:>12.3f} {min(values):>7.3f} {max(values):>7.3f} {median / floor:>11.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"pages": args.pages, "per_page": args.per_page, "rounds": args.rounds,
                                         "legs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
