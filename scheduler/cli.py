"""Command line: ``scheduler run | run-job | list | validate | history | schema | health | demo | backfill | status
| logs | pause | resume | trigger | web``.

This module only parses arguments and dispatches: the commands live in
:mod:`scheduler.app.commands`, :mod:`scheduler.app.console_commands`, :mod:`scheduler.ops`,
:mod:`scheduler.web.cli` and :mod:`scheduler.sample.demo`, and build
their context (config, store, logging) in :mod:`scheduler.app.context`.

Every subcommand accepts ``--config`` and ``--data-dir`` before or after its own arguments.
Errors the user can fix (bad config, unknown job, bad date) print one line per problem and exit
with the error's code (2); no tracebacks for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from scheduler import __version__
from scheduler.app import commands
from scheduler.errors import ConfigError, SchedulerError
from scheduler.leaving import leave


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", default=default, metavar="PATH",
                        help="config file or directory of *.yaml (env SCHEDULER_CONFIG, default config/)")
    parser.add_argument("--data-dir", default=default, metavar="DIR",
                        help="data root (env SCHEDULER_DATA_DIR, default data/)")
    parser.add_argument("--log-level", default=default, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=default, choices=["auto", "json", "console"])


def build_parser(prog: str = "scheduler", only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only`` (a core subcommand's name), that subcommand's
    alone: the same arguments, usage and errors for it, built without the others."""
    parser = argparse.ArgumentParser(prog=prog, description="Cron-container scheduler for recurring data jobs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    for name, (help_text, arguments) in CORE.items():
        if only is None or only == name:
            arguments(add(name, help_text))
    if only is None:
        from scheduler.app import console_commands
        from scheduler.ops import cli as ops_cli
        from scheduler.web import cli as web_cli

        ops_cli.add_subcommands(add)
        console_commands.add_subcommands(add)
        web_cli.add_subcommands(add)
    return parser


def _no_arguments(p: argparse.ArgumentParser) -> None:
    """A subcommand with only the common options."""


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", help="logical date YYYY-MM-DD (default: yesterday)")
    p.add_argument("--records", type=int, default=5_000, help="records the sample API serves for the date")
    p.add_argument("--job", default="daily_sales")


def _health_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-age", type=float, default=None, help="seconds since the last loop tick (default 65)")


def _run_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job name")
    p.add_argument("--date", help="logical date YYYY-MM-DD (backfill); default: the most recent slot")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="run parameter (repeatable); values are parsed as YAML scalars")
    p.add_argument("--force", action="store_true",
                   help="if a run of the same slot is in progress (any scheduler sharing the state store), "
                        "wait for it to end and run the slot again instead of refusing")


def _demo(args: argparse.Namespace) -> int:
    from scheduler.sample.demo import cmd_demo  # imported on use: pyarrow only for the demo

    return cmd_demo(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": commands.cmd_run, "run-job": commands.cmd_run_job, "list": commands.cmd_list,
    "validate": commands.cmd_validate, "history": commands.cmd_history, "schema": commands.cmd_schema,
    "health": commands.cmd_health, "demo": _demo,
}
# the core subcommands, in help order: (help, what adds their own arguments)
CORE: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("run the scheduler in the foreground (PID 1 of its container)", _no_arguments),
    "run-job": ("run one job now in the foreground; exit code is the run's outcome", _run_job_args),
    "list": ("list jobs with their schedules and next three fire times", _list_args),
    "validate": ("check the config and exit (0 valid, 2 invalid)", _no_arguments),
    "history": ("show recorded runs, newest first", _history_args),
    "schema": ("print the JSON Schema of the config file", _no_arguments),
    "demo": ("quick start: run daily_sales against the bundled sample sales API", _demo_args),
    "health": ("exit 0 if the scheduler using this data dir is alive (for HEALTHCHECK)", _health_args),
}
_VALUED = ("--config", "--data-dir", "--log-level", "--log-format")  # the top-level options that take a value


def core_command(argv: Sequence[str]) -> str | None:
    """The core subcommand ``argv`` names, when its parser alone parses ``argv`` as the full one
    would: the first word that is not a common option (or its value) names it.  None when the
    full parser is needed: no subcommand, another one, or ``-h``/``--version``/an abbreviated
    or unknown option before it."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in CORE else None
        elif word.partition("=")[0] not in _VALUED or "=" not in word:
            return None
    return None


def main(argv: Sequence[str] | None = None, prog: str = "scheduler") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog, only=core_command(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    handler = COMMANDS.get(args.command)
    if handler is None:
        from scheduler.app import console_commands
        from scheduler.ops import cli as ops_cli
        from scheduler.web import cli as web_cli

        handler = (console_commands.COMMANDS.get(args.command) or web_cli.COMMANDS.get(args.command)
                   or ops_cli.COMMANDS[args.command])
    try:
        return handler(args)
    except SchedulerError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(line if isinstance(exc, ConfigError) else f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run_job_main(argv: Sequence[str] | None = None) -> int:
    """``run-job NAME [--date D] [--param k=v]``: ``scheduler run-job``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["run-job", *argv], prog="scheduler")


def script() -> NoReturn:
    """The ``scheduler`` console script (and ``python -m scheduler``): :func:`main`, then a quick
    exit (:func:`~scheduler.leaving.leave`) instead of tearing down every imported module."""
    leave(main())


def run_job_script() -> NoReturn:
    """The ``run-job`` console script."""
    leave(run_job_main())

