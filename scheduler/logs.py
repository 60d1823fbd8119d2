"""structlog setup: JSON lines off a terminal, console rendering on one, secrets always masked.

The :class:`~scheduler.redaction.Redactor` runs last before rendering, on every value of every
event, exception text included, so a secret from the config (tokens, passwords, ``*_file``
contents, in any of the forms it travels in) or an ``Authorization`` header never reaches the
output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from scheduler.redaction import MASK, MIN_SECRET_LENGTH, Redactor

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Redactor", "configure", "get_logger"]


def _import_structlog() -> Any:
    """Import structlog without letting its console renderer pull in rich (~4 MB of RSS).

    ``structlog.dev`` imports rich, when installed, only to pretty-print tracebacks; the daemon
    logs tracebacks as text.  rich stays importable for the CLI's tables afterwards.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog as module

        return module
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes ``import rich`` fail inside structlog
    try:
        import structlog as module
    finally:
        del sys.modules["rich"]
    return module


structlog = _import_structlog()


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (),
              stream: TextIO | None = None) -> Redactor:
    """Configure structlog for the process; returns the redactor so reloads can update secrets."""
    stream = stream or sys.stdout
    redactor = Redactor(secrets)
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (structlog.processors.JSONRenderer() if use_json
                     else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor.process,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    return redactor


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("scheduler").bind(**bound)
