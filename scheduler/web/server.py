"""Serving the console: one request through :class:`~scheduler.web.app.WebApp` (for the
daemon's endpoint and ``scheduler web`` alike), and the HTTP server of ``scheduler web``."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from scheduler.httpserve import QuietHandler, threading_server
from scheduler.web.app import WebApp
from scheduler.web.wire import Response, checked, read_request, write_response


def serve(handler: BaseHTTPRequestHandler, app: WebApp, log: Any) -> None:
    """Answer the handler's request with the console; a failure is a logged 500, never a crash."""
    path = urlsplit(handler.path).path
    try:
        response = checked(app.handle(read_request(handler, app.base)))
    except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server thread
        log.error("web request failed", method=handler.command, path=path, error=f"{type(exc).__name__}: {exc}")
        response = Response(500, b"internal error\n", "text/plain; charset=utf-8", {"Cache-Control": "no-store"})
    write_response(handler, response)
    log.debug("web request", method=handler.command, path=path, status=response.status)


def make_server(host: str, port: int, app: WebApp, log: Any) -> ThreadingHTTPServer:
    """A threading HTTP server bound to ``(host, port)`` serving only the console (``OSError``
    when it cannot bind)."""

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            serve(self, app, log)

        do_HEAD = do_POST = do_GET

    return threading_server(host, port, Handler, "WebHTTPServer")
