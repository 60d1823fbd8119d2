"""structlog setup: JSON lines off a terminal, console rendering on one, secrets always masked.

The :class:`~scheduler.redaction.Redactor` runs last before rendering, on every value of every
event, exception text included, so a secret from the config (tokens, passwords, ``*_file``
contents, in any of the forms it travels in) or an ``Authorization`` header never reaches the
output.

structlog is imported when a process first needs it, not before: a short command whose
configuration was deferred (``configure(..., defer=True)``: ``run-job`` and the other foreground
commands) and that logs nothing at its level never pays for the import.  What must hold: an
event at or above the configured level always reaches structlog, configured as asked, before
it is rendered; below that level it is dropped, as structlog's filtering logger drops it.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from scheduler.redaction import MASK, MIN_SECRET_LENGTH, Redactor

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Redactor", "configure", "get_logger", "structlog"]

# the standard library's numbers (``logging.INFO`` ...), without importing ``logging`` for them
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# a logger's methods and the level each logs at ("exception" logs at error, "warn" at warning)
_METHOD_LEVELS = {**LEVELS, "warn": 30, "exception": 40, "fatal": 50}


@dataclass(frozen=True)
class _Settings:
    level: int
    fmt: str
    stream: TextIO
    redactor: Redactor


_pending: _Settings | None = None  # a deferred configuration, applied when structlog is imported


class _OnUse(types.ModuleType):
    """Stands in for a module that is imported but not used at import time: the first attribute
    read imports the real module (which replaces the stand-in in ``sys.modules``) and reads it."""

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


@contextmanager
def _stand_in(name: str) -> Iterator[None]:
    """While in the block, ``import name`` binds an :class:`_OnUse` stand-in (when ``name`` is not
    imported yet); afterwards the next ``import name`` imports the real module."""
    if name in sys.modules:
        yield
        return
    stand_in = _OnUse(name)
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]


class _Hidden:
    """A ``sys.meta_path`` finder under which ``name`` (and its submodules) cannot be imported, by
    one thread only: the thread that made it.  ``sys.modules`` is left alone, so other threads
    import ``name`` as usual meanwhile."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] == self.name and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


_lock = threading.Lock()
_ready = False  # structlog imported and configured by :func:`structlog`


def structlog() -> Any:
    """The structlog module, imported on first use and configured as the last ``configure`` asked.

    Thread-safe: the first caller imports and configures it, any other waits for that.  Two of
    structlog's imports are kept out of the process: rich (``structlog.dev`` imports it, when
    installed, only to pretty-print tracebacks, ~4 MB of RSS; the scheduler logs tracebacks as
    text; rich stays importable for the CLI's tables, and for other threads meanwhile), and
    asyncio until one of structlog's async methods uses it (``structlog.stdlib`` and
    ``structlog._native`` import it for those only; with ssl, which it imports, it costs about
    as much as all of structlog).
    """
    global _pending, _ready
    with _lock:
        if "structlog" in sys.modules:
            import structlog as module  # waits for an import another thread is making
        else:
            hidden = _Hidden("rich")
            sys.meta_path.insert(0, hidden)
            try:
                with _stand_in("asyncio"):
                    import structlog as module
            finally:
                sys.meta_path.remove(hidden)
        if _pending is not None:
            settings, _pending = _pending, None
            _apply(module, settings)
        _ready = True
    return module


def _apply(module: Any, settings: _Settings) -> None:
    use_json = settings.fmt == "json" or (settings.fmt == "auto" and not settings.stream.isatty())
    renderer: Any = (module.processors.JSONRenderer() if use_json
                     else module.dev.ConsoleRenderer(colors=settings.stream.isatty()))
    module.configure(
        processors=[
            module.contextvars.merge_contextvars,
            module.processors.add_log_level,
            module.processors.TimeStamper(fmt="iso", utc=True),
            module.processors.format_exc_info,
            settings.redactor.process,
            renderer,
        ],
        wrapper_class=module.make_filtering_bound_logger(settings.level),
        logger_factory=module.PrintLoggerFactory(settings.stream),
        cache_logger_on_first_use=False,
    )


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (),
              stream: TextIO | None = None, *, defer: bool = False) -> Redactor:
    """Configure structlog for the process; returns the redactor so reloads can update secrets.

    ``defer``: while structlog is not imported yet, only record the settings; the first logger
    call at or above ``level`` (or :func:`structlog`) imports and configures it.  Code that logs
    through structlog directly (kinds in the worker) must run in a process configured without it.
    """
    global _pending
    settings = _Settings(LEVELS[level.lower()], fmt, stream or sys.stdout, Redactor(secrets))
    with _lock:
        _pending = settings
    if not defer or _ready or "structlog" in sys.modules:
        structlog()
    return settings.redactor


def get_logger(**bound: Any) -> Any:
    """A structlog logger named ``scheduler`` with ``bound`` context (deferred while structlog is)."""
    if _pending is not None and not _ready:
        return _Deferred(bound)
    return structlog().get_logger("scheduler").bind(**bound)


def _drop(*args: Any, **kwargs: Any) -> None:
    """A call below the configured level: dropped, as structlog's filtering logger drops it."""


class _Deferred:
    """A logger standing in for structlog's until an event needs it: calls below the deferred
    configuration's level are dropped; anything else imports structlog and goes to the real
    logger (bound to the same context) from then on."""

    __slots__ = ("_bound", "_real")

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound
        self._real: Any = None

    def bind(self, **more: Any) -> Any:
        if self._real is None and _pending is not None and not _ready:
            return _Deferred({**self._bound, **more})
        return self._logger().bind(**more)

    def _logger(self) -> Any:
        if self._real is None:
            self._real = structlog().get_logger("scheduler").bind(**self._bound)
        return self._real

    def __getattr__(self, name: str) -> Any:
        if self._real is None and _pending is not None and not _ready:
            level = _METHOD_LEVELS.get(name)
            if level is not None and level < _pending.level:
                return _drop
        return getattr(self._logger(), name)
