"""structlog setup: JSON lines off a terminal, console rendering on one, secrets always masked.

The :class:`Redactor` runs last before rendering, on every value of every event, exception text
included, so a secret from the config (tokens, passwords, ``*_file`` contents) or an
``Authorization`` header never reaches the output.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO


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

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values are never masked (they would mask ordinary text); one rule everywhere
_PATTERNS = [  # (pattern, replacement): credential-shaped text masked even if not a known secret
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer |basic |token )?)[^\s\"',}]+"), r"\1***"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),
    (re.compile(r"(?i)([?&;](?:access_token|token|api_key|apikey|key|password|secret|sig|signature)=)[^&\s\"']+"),
     r"\1***"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s/]+(@)"), r"\1***\2"),
]


class Redactor:
    """A structlog processor masking known secrets and credential-shaped substrings.

    ``secrets`` may be replaced at any time (config reload); longer secrets are masked first so a
    secret containing another is fully hidden.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._walk(v) for v in value)
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        return {k: self._walk(v) for k, v in event.items()}


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
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    return redactor


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("scheduler").bind(**bound)
