"""A sample sales API to run ``daily_sales`` against: real HTTP on 127.0.0.1, deterministic dirty data.

``GET /v1/sales?date=YYYY-MM-DD&page=N&per_page=M`` returns
``{"data": [...], "page": N, "per_page": M, "total_pages": P, "total": T}``.  The records of a
date are the same on every call (seeded by the date) and carry the dirt real feeds have: the
same order twice across pages, an unparseable ``sold_at`` now and then, null ``store_id``,
mixed-case ``sku`` and email, numeric-string quantities, ``"$12.50"`` prices, negative
quantities (returns).  Options: a bearer token to require, and injected 429 (with
``Retry-After``) or 503 answers every N requests.

    python -m scheduler.sample.api --port 0 --records-per-day 20000 --per-page 1000

prints the base URL (``http://127.0.0.1:PORT``) on the first line and serves until interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import threading
from collections import OrderedDict
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BLOCK = 1000
_SEGMENTS = ("retail", "wholesale", "online", "Retail")
_FIRST = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
_DOMAINS = ("example.com", "shop.example", "mail.test")
_BAD_TIMES = ("not-a-date", "2026-13-45T99:00:00Z", "", "yesterday")


_CASES = (str.upper, str.title, str, str)


def _base_block(day: date, block: int) -> list[dict[str, Any]]:
    """Clean-ish records for indices ``[block*BLOCK, (block+1)*BLOCK)`` of ``day`` (deterministic).

    One 128-bit draw per record, sliced with divmod, keeps generation cheap (a few microseconds a
    record) so the server is not what a benchmark of the client measures.
    """
    rng = random.Random(f"{day.isoformat()}:{block}")
    prefix, stamp = day.isoformat() + "T", day.strftime("%Y%m%d")
    out = []
    for i in range(block * BLOCK, (block + 1) * BLOCK):
        bits = rng.getrandbits(128)
        bits, secs = divmod(bits, 86_400)
        bits, bad_time = divmod(bits, 200)  # 1 in 200: unparseable
        bits, store = divmod(bits, 3_000)  # 2%: null
        bits, sku = divmod(bits, 5_000)
        bits, sku_case = divmod(bits, 4)
        bits, qty = divmod(bits, 9)
        bits, qty_kind = divmod(bits, 100)  # 3%: negative (a return); 20%: a numeric string
        bits, cents = divmod(bits, 99_901)
        bits, dollar = divmod(bits, 10)  # 30%: "$12.50"
        bits, eur = divmod(bits, 10)
        bits, who = divmod(bits, 100_000)
        bits, mail_case = divmod(bits, 4)
        bits, segment = divmod(bits, 4)
        hh, rest = divmod(secs, 3600)
        quantity: Any = qty + 1
        if qty_kind < 3:
            quantity = -(qty % 3 + 1)
        if qty_kind >= 80:
            quantity = str(quantity)
        price = f"{(cents + 99) / 100:.2f}"
        email = f"{_FIRST[who % 10]}.{who // 10}@{_DOMAINS[who % 3]}"
        out.append({
            "order_id": f"ORD-{stamp}-{i:07d}",
            "sold_at": _BAD_TIMES[i % 4] if bad_time == 0 else f"{prefix}{hh:02d}:{rest // 60:02d}:{rest % 60:02d}Z",
            "store_id": None if store < 60 else store % 60 + 1,
            "sku": _CASES[sku_case](f"sku-{sku:04d}"),
            "quantity": quantity,
            "unit_price": "$" + price if dollar < 3 else price,
            "currency": "EUR" if eur == 0 else "USD",
            "customer": {"email": _CASES[mail_case](email), "segment": _SEGMENTS[segment]},
        })
    return out


class SalesData:
    """Records of each date, by index; about 1% of indices repeat an earlier order (a duplicate)."""

    def __init__(self, records_per_day: int, cache_blocks: int = 8) -> None:
        self.records_per_day = records_per_day
        self._cache: OrderedDict[tuple[date, int], list[dict[str, Any]]] = OrderedDict()
        self._size = cache_blocks
        self._lock = threading.Lock()

    def _base(self, day: date, block: int) -> list[dict[str, Any]]:
        key = (day, block)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        records = _base_block(day, block)
        with self._lock:
            self._cache[key] = records
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return records

    def records(self, day: date, start: int, stop: int) -> list[dict[str, Any]]:
        stop = min(stop, self.records_per_day)
        out = []
        for i in range(start, stop):
            block, offset = divmod(i, BLOCK)
            dup = i >= 10 and (i * 2_654_435_761 + day.toordinal() * 97) % 1_000 < 10
            if dup:  # the same order again, from up to ~1.5 pages back
                j = i - 1 - (i * 31 % min(i, 1500))
                jb, jo = divmod(j, BLOCK)
                out.append(self._base(day, jb)[jo])
            else:
                out.append(self._base(day, block)[offset])
        return out


class SalesServer(ThreadingHTTPServer):
    """The HTTP server; settings are attributes so tests can change them between requests."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, records_per_day: int, per_page: int, token: str | None,
                 fail_every: int, fail_status: int, retry_after: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.data = SalesData(records_per_day)
        self.per_page, self.token = per_page, token
        self.fail_every, self.fail_status, self.retry_after = fail_every, fail_status, retry_after
        self.requests = 0
        self._count_lock = threading.Lock()

    def next_request_number(self) -> int:
        with self._count_lock:
            self.requests += 1
            return self.requests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for all pages
    disable_nagle_algorithm = True  # headers and body leave at once, no delayed-ACK stalls
    server: SalesServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the client logs what matters
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        buffered: list[bytes] = self._headers_buffer
        buffered.append(b"\r\n")  # end of headers, sent with the body in one write
        self.wfile.write(b"".join(buffered) + payload)
        self._headers_buffer: list[bytes] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        server = self.server
        number = server.next_request_number()
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, {"status": "ok"})
        if url.path != "/v1/sales":
            return self._send(404, {"error": "not found"})
        if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
            return self._send(401, {"error": "missing or invalid bearer token"})
        if server.fail_every and number % server.fail_every == 0:
            extra = {"Retry-After": str(server.retry_after)} if server.fail_status in (429, 503) else {}
            return self._send(server.fail_status, {"error": "injected failure"}, extra)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            day = date.fromisoformat(query["date"])
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", server.per_page))
            if page < 1 or not 1 <= per_page <= 10_000:
                raise ValueError("page >= 1 and 1 <= per_page <= 10000")
        except (KeyError, ValueError) as exc:
            return self._send(400, {"error": f"bad query: {exc}"})
        total = server.data.records_per_day
        records = server.data.records(day, (page - 1) * per_page, page * per_page)
        self._send(200, {"data": records, "page": page, "per_page": per_page,
                         "total_pages": math.ceil(total / per_page), "total": total})


def start_server(port: int = 0, records_per_day: int = 5_000, per_page: int = 1_000, token: str | None = None,
                 fail_every: int = 0, fail_status: int = 503, retry_after: int = 1) -> tuple[SalesServer, str]:
    """Start serving in a daemon thread; returns the server (``shutdown()`` it) and its base URL."""
    server = SalesServer(port, records_per_day, per_page, token, fail_every, fail_status, retry_after)
    threading.Thread(target=server.serve_forever, name="sample-sales-api", daemon=True).start()
    host, bound = server.server_address[:2]
    return server, f"http://{host!s}:{bound}"


def serve_until_stopped(server: ThreadingHTTPServer) -> None:
    """Block until SIGINT or SIGTERM, then shut ``server`` down (it serves in another thread)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # only a flag; the main thread shuts down
    stop.wait()
    server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler.sample.api", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--records-per-day", type=int, default=5_000)
    parser.add_argument("--per-page", type=int, default=1_000, help="page size when the client sends none")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--fail-every", type=int, default=0, help="answer every Nth request with --fail-status")
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on injected 429/503")
    args = parser.parse_args(argv)
    server, url = start_server(args.port, args.records_per_day, args.per_page, args.token,
                               args.fail_every, args.fail_status, args.retry_after)
    print(url, flush=True)
    serve_until_stopped(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
