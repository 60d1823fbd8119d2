"""Serving the console: one request through :class:`~scheduler.web.app.WebApp`, and the
``scheduler web`` process (its own HTTP server over the state store).

``scheduler web`` reads the same state store as the daemons (with PostgreSQL, every replica's runs
and output), changes it only through the store (``set_paused``, ``request_trigger``: a running
daemon claims the request, as for ``scheduler trigger``), and never runs a job itself.  It
loads the config once at start; restart it after a config change.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from scheduler.web.app import WebApp
from scheduler.web.wire import Response, read_request, write_response


def serve(handler: BaseHTTPRequestHandler, app: WebApp, log: Any) -> None:
    """Answer the handler's request with the console; a failure is a logged 500, never a crash."""
    path = urlsplit(handler.path).path
    try:
        response = app.handle(read_request(handler, app.base))
    except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server thread
        log.error("web request failed", method=handler.command, path=path, error=f"{type(exc).__name__}: {exc}")
        response = Response(500, b"internal error\n", "text/plain; charset=utf-8", {"Cache-Control": "no-store"})
    write_response(handler, response)
    log.debug("web request", method=handler.command, path=path, status=response.status)


def make_server(listen: str, app: WebApp, log: Any) -> ThreadingHTTPServer:
    """A threading HTTP server bound to ``listen`` (``HOST:PORT``) serving only the console."""
    from scheduler.ops.http import parse_listen

    host, port = parse_listen(listen)

    class Handler(BaseHTTPRequestHandler):
        server_version = "scheduler"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged without headers, by serve()

        def do_GET(self) -> None:
            serve(self, app, log)

        do_HEAD = do_POST = do_GET

    server_cls = type("WebHTTPServer", (ThreadingHTTPServer,), {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET,
        "daemon_threads": True, "allow_reuse_address": True,
    })
    server: ThreadingHTTPServer = server_cls((host, port), Handler)
    return server


def cmd_web(args: argparse.Namespace) -> int:
    """``scheduler web [--listen HOST:PORT] [--base-path P]``: serve the console until SIGTERM/SIGINT."""
    from scheduler.app.context import App, Options
    from scheduler.errors import ConfigError
    from scheduler.web.views import Backend

    with App.inspect(Options.from_args(args)) as app:
        redactor = app.configure_logging()
        import structlog

        log = structlog.get_logger("scheduler.web")
        config = app.config
        base_path = (args.base_path if args.base_path is not None else config.http.base_path).rstrip("/")
        if base_path and not base_path.startswith("/"):
            raise ConfigError(f"--base-path: must start with '/', got {base_path!r}")
        store = app.store
        web = WebApp(Backend(config=lambda: config, store=store, redact=lambda: redactor.redact, served_by="web"),
                     base_path)
        try:
            server = make_server(args.listen, web, log)
        except OSError as exc:
            raise ConfigError(f"--listen: cannot listen on {args.listen}: {exc.strerror or exc}") from None
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            stop.set()  # handlers only set flags; the main thread shuts the server down

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="web-http",
                                  daemon=True)
        thread.start()
        host, port = server.server_address[:2]
        log.info("web console listening", listen=f"{host!s}:{port}", base_path=base_path or "/",
                 api=config.http.api_token is not None)
        while not stop.wait(0.5):
            pass
        server.shutdown()
        server.server_close()
        log.info("web console stopped")
    return 0
