"""The ``scheduler web`` subcommand's arguments; the command itself loads on use
(:func:`scheduler.web.server.cmd_web`), so building the parser imports no web module."""

from __future__ import annotations

import argparse
from collections.abc import Callable

DEFAULT_LISTEN = "127.0.0.1:8081"


def _web(args: argparse.Namespace) -> int:
    from scheduler.web.server import cmd_web

    return cmd_web(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"web": _web}


def add_subcommands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = add("web", "serve the web console from its own process over the state store (runs no jobs)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to listen (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--base-path", default=None, metavar="PATH",
                   help="URL path prefix behind a reverse proxy (default: http.base_path)")
