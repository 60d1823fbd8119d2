"""Operations subcommands: ``backfill`` and ``status``.

Handlers are imported lazily by :data:`COMMANDS`' wrappers, so building the parser (every
``scheduler`` invocation) loads neither rich nor the runner.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _backfill(args: argparse.Namespace) -> int:
    from scheduler.ops.backfill import cmd_backfill

    return cmd_backfill(args)


def _status(args: argparse.Namespace) -> int:
    from scheduler.ops.status import cmd_status

    return cmd_status(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"backfill": _backfill, "status": _status}


def add_subcommands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register the operations subcommands on the main parser."""
    from scheduler.ops.backfill import add_arguments

    add_arguments(add("backfill", "run a job for each logical date in a range (resumable)"))
    p = add("status", "show each job's last run, next fire time and failure streak")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
