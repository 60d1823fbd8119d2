"""The sample sales API answered from memory: every page rendered once at start, then served as bytes.

The bundled sample API builds each page on request, so a client measured against it waits on the
server.  This one renders every page of one date with the sample API's own generator and JSON
encoding before it prints its URL, then answers ``GET /v1/sales?date=D&page=N&per_page=M`` (the
rendered ``date`` and ``per_page`` only) with the stored bytes: the client is then the bottleneck,
as with a real API on a fast network.  Run it in a process of its own, so it does not share a GIL
with the measured client::

    python bench/memory_api.py --records 1000000 --per-page 1000 --date 2026-11-05

prints ``http://127.0.0.1:PORT`` once every page is ready and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.sample.api import SalesData, serve_until_stopped  # noqa: E402 - after the path set-up above


def render_pages(records: int, per_page: int, day: date) -> list[bytes]:
    """Every page body of ``day``, byte for byte what the sample API sends for it."""
    data = SalesData(records)
    total_pages = math.ceil(records / per_page)
    pages = []
    for page in range(1, total_pages + 1):
        body = {"data": data.records(day, (page - 1) * per_page, page * per_page), "page": page,
                "per_page": per_page, "total_pages": total_pages, "total": records}
        pages.append(json.dumps(body, separators=(",", ":")).encode())
    return pages


class MemoryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pages: list[bytes], records: int, per_page: int, day: date) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pages, self.records, self.per_page, self.day = pages, records, per_page, day.isoformat()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for all pages
    disable_nagle_algorithm = True
    server: MemoryServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: bytes) -> None:
        head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        self.wfile.write(head + payload)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        server = self.server
        try:
            page = int(query.get("page", "1"))
            ok = (url.path == "/v1/sales" and query.get("date") == server.day
                  and int(query.get("per_page", server.per_page)) == server.per_page)
        except ValueError:
            ok = False
        if not ok:
            return self._send(400, b'{"error":"only the rendered date and per_page are served"}')
        if 1 <= page <= len(server.pages):
            return self._send(200, server.pages[page - 1])
        self._send(200, json.dumps({"data": [], "page": page, "per_page": server.per_page,
                                    "total_pages": len(server.pages), "total": server.records},
                                   separators=(",", ":")).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--per-page", type=int, default=1_000)
    parser.add_argument("--date", default="2026-11-05")
    args = parser.parse_args(argv)
    day = date.fromisoformat(args.date)
    server = MemoryServer(render_pages(args.records, args.per_page, day), args.records, args.per_page, day)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    serve_until_stopped(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
