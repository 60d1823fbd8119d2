"""Command line: ``scheduler run | run-job | list | validate | history | schema | health | demo | backfill | status
| logs | pause | resume | trigger | web``.

This module only parses arguments and dispatches: the commands live in
:mod:`scheduler.app.commands`, :mod:`scheduler.ops` and :mod:`scheduler.sample.demo`, and build
their context (config, store, logging) in :mod:`scheduler.app.context`.

Every subcommand accepts ``--config`` and ``--data-dir`` before or after its own arguments.
Errors the user can fix (bad config, unknown job, bad date) print one line per problem and exit
with the error's code (2); no tracebacks for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from scheduler import __version__
from scheduler.app import commands, console_commands
from scheduler.errors import ConfigError, SchedulerError


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", default=default, metavar="PATH",
                        help="config file or directory of *.yaml (env SCHEDULER_CONFIG, default config/)")
    parser.add_argument("--data-dir", default=default, metavar="DIR",
                        help="data root (env SCHEDULER_DATA_DIR, default data/)")
    parser.add_argument("--log-level", default=default, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=default, choices=["auto", "json", "console"])


def build_parser(prog: str = "scheduler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Cron-container scheduler for recurring data jobs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    add("run", "run the scheduler in the foreground (PID 1 of its container)")
    p = add("run-job", "run one job now in the foreground; exit code is the run's outcome")
    _run_job_args(p)
    p = add("list", "list jobs with their schedules and next three fire times")
    p.add_argument("--json", action="store_true")
    add("validate", "check the config and exit (0 valid, 2 invalid)")
    p = add("history", "show recorded runs, newest first")
    p.add_argument("job", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    add("schema", "print the JSON Schema of the config file")
    p = add("demo", "quick start: run daily_sales against the bundled sample sales API")
    p.add_argument("--date", help="logical date YYYY-MM-DD (default: yesterday)")
    p.add_argument("--records", type=int, default=5_000, help="records the sample API serves for the date")
    p.add_argument("--job", default="daily_sales")
    p = add("health", "exit 0 if the scheduler using this data dir is alive (for HEALTHCHECK)")
    p.add_argument("--max-age", type=float, default=None, help="seconds since the last loop tick (default 65)")
    from scheduler.ops import cli as ops_cli

    ops_cli.add_subcommands(add)
    console_commands.add_subcommands(add)
    from scheduler.web import cli as web_cli

    web_cli.add_subcommands(add)
    return parser


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


def main(argv: Sequence[str] | None = None, prog: str = "scheduler") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from scheduler.ops import cli as ops_cli
    from scheduler.web import cli as web_cli

    handler = (COMMANDS.get(args.command) or console_commands.COMMANDS.get(args.command)
               or web_cli.COMMANDS.get(args.command) or ops_cli.COMMANDS[args.command])
    try:
        return handler(args)
    except SchedulerError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(line if isinstance(exc, ConfigError) else f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run_job_main(argv: Sequence[str] | None = None) -> int:
    """The ``run-job`` console script: ``run-job NAME [--date D] [--param k=v]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["run-job", *argv], prog="scheduler")

