"""``scheduler web``: the console from a process of its own, over the state store.

It reads the same store as the daemons (with PostgreSQL, every replica's runs and output),
changes it only through the store (``set_paused``; ``request_trigger``, which a running daemon
claims, as for ``scheduler trigger``) and never runs a job itself.  It loads the config once at
start; restart it after a config change.  Building the parser imports no web module: the
command's imports happen when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable

DEFAULT_LISTEN = "127.0.0.1:8081"


def add_subcommands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("web", "serve the web console from its own process over the state store (runs no jobs)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to listen (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--base-path", default=None, metavar="PATH",
                   help="URL path prefix behind a reverse proxy (default: http.base_path)")


def cmd_web(args: argparse.Namespace) -> int:
    """``scheduler web [--listen HOST:PORT] [--base-path P]``: serve the console until SIGTERM/SIGINT."""
    import signal
    import threading

    from scheduler.app.context import App, Options
    from scheduler.errors import ConfigError
    from scheduler.logs import get_logger
    from scheduler.ops.http import parse_listen
    from scheduler.web.app import WebApp
    from scheduler.web.server import make_server
    from scheduler.web.views import Backend

    with App.inspect(Options.from_args(args)) as app:
        redactor = app.configure_logging()
        log = get_logger(component="web")
        config = app.config
        base_path = (args.base_path if args.base_path is not None else config.http.base_path).rstrip("/")
        if base_path and not base_path.startswith("/"):
            raise ConfigError(f"--base-path: must start with '/', got {base_path!r}")
        store = app.store
        web = WebApp(Backend(config=lambda: config, store=store, redact=lambda: redactor.redact, served_by="web"),
                     base_path)
        try:
            host, port = parse_listen(args.listen)
            server = make_server(host, port, web, log)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"--listen: cannot listen on {args.listen}: {reason}") from None
        stop = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            stop.set()  # handlers only set flags; the main thread shuts the server down

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="web-http",
                                  daemon=True)
        thread.start()
        bound_host, bound_port = server.server_address[:2]
        log.info("web console listening", listen=f"{bound_host!s}:{bound_port}", base_path=base_path or "/",
                 api=config.http.api_token is not None)
        while not stop.wait(0.5):
            pass
        server.shutdown()
        server.server_close()
        log.info("web console stopped")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"web": cmd_web}
