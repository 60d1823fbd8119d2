"""Operations subcommands: ``backfill`` and ``status``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_subcommands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register the operations subcommands on the main parser."""
