"""The ``command`` kind: an argv list or a ``/bin/sh -c`` line, run as the attempt's own process.

This package's top level is what the runner needs in the daemon's process (the argv of a compiled
spec) and imports nothing else; the job model lives in :mod:`scheduler.kinds.command.spec`.
"""

from __future__ import annotations

from typing import Any


def command_argv(spec: Any) -> list[str]:
    """The argv of a ``command`` job (model or compiled view): its ``command`` list, or ``/bin/sh -c`` its ``shell``."""
    if spec.shell is not None:
        return ["/bin/sh", "-c", spec.shell]
    return list(spec.command)


__all__ = ["command_argv"]
