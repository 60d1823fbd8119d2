"""``python -m scheduler.config.compile PATH``: validate a config and print it as JSON.

The child side of :func:`scheduler.config.compiled.load_compiled`: stdout is one JSON object,
either the compiled config or ``{"issues": [...]}`` (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from scheduler.config.compiled import dump_compiled
from scheduler.config.loader import load_config
from scheduler.errors import ConfigError


def main(argv: list[str]) -> int:
    try:
        config = load_config(argv[0])
    except ConfigError as exc:
        print(json.dumps({"issues": [dataclasses.asdict(issue) for issue in exc.issues]}))
        return 2
    print(dump_compiled(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
