"""The threading HTTP server both endpoints run on: the daemon's operations endpoint
(``ops/http.py``) and ``scheduler web`` (``web/server.py``).

Holds only what the two share, standard library only, so either imports it without the other.
"""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IDLE_TIMEOUT = 30.0  # seconds a connection may sit idle or trickle a request before it is closed


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that names no Python version, drops idle connections after
    :data:`IDLE_TIMEOUT`, and leaves logging to the subclass (which logs requests without headers)."""

    server_version = "scheduler"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


def threading_server(host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """A server bound to ``(host, port)`` (IPv6 for a host with a colon), one daemon thread per
    connection, the address reusable at once after a restart; ``OSError`` when it cannot bind."""
    server_cls = type(name, (ThreadingHTTPServer,), {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        "daemon_threads": True, "allow_reuse_address": True,
    })
    server: ThreadingHTTPServer = server_cls((host, port), handler)
    return server
