"""The daemon as its extensions see it: :class:`DaemonView`, and the hooks they offer it.

The operations features (``scheduler.ops``: alerts, freshness, metrics, the HTTP endpoint) are
typed against these protocols, never against :class:`~scheduler.daemon.Daemon`: they import
neither the daemon nor the runner, and what they may touch is listed here, exactly (a test walks
``scheduler/ops/`` and compares).  :class:`~scheduler.daemon.Daemon` satisfies
:class:`DaemonView` structurally.

Threads: the hooks of :class:`DaemonExtension` run on the loop thread and must return quickly.
Other threads (the HTTP server's) may read the attributes - each read is one attribute load,
atomic under the GIL - ping the store, and call :meth:`DaemonView.request_run` and
:meth:`DaemonView.wake`, which are thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from scheduler.config.compiled import Config
    from scheduler.logs import Redactor
    from scheduler.runs import RunHandle, RunRequest
    from scheduler.stores.protocol import StateStore

IDLE_TICK = timedelta(seconds=30)  # the loop steps at least this often, so on_tick runs at least this often


class EventLog(Protocol):
    """A structlog bound logger as the scheduler uses it: an event name and key/value fields."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...


@runtime_checkable
class DaemonExtension(Protocol):
    """Hooks the daemon calls on the loop thread; a hook that raises is logged, never propagated."""

    def on_tick(self, daemon: DaemonView) -> None:
        """At the end of every loop step."""

    def on_dispatched(self, daemon: DaemonView, handle: RunHandle) -> None:
        """For every run the loop dispatches, just before its thread starts."""

    def on_finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        """For every run the loop collects (``handle.result`` may be None)."""

    def on_slot(self, daemon: DaemonView, job: str, outcome: str, count: int) -> None:
        """For ``count`` slots of ``job`` not run: ``outcome`` is ``skipped`` or ``missed``."""

    def on_shutdown(self, daemon: DaemonView) -> None:
        """Once, after the last run was collected."""


@runtime_checkable
class DaemonView(Protocol):
    """What of a running daemon its extensions read and call - nothing else."""

    @property
    def config(self) -> Config:
        """The config in force (replaced whole by a reload, never mutated)."""

    @property
    def store(self) -> StateStore:
        """The state store (thread-safe)."""

    @property
    def log(self) -> EventLog: ...

    @property
    def redactor(self) -> Redactor | None:
        """Masks secrets in text that leaves the process (alerts, API bodies); None in tests."""

    @property
    def extensions(self) -> list[DaemonExtension]:
        """The installed extensions; ``scheduler.ops.attach`` appends to it before serving."""

    @property
    def active(self) -> Mapping[str, Sequence[RunHandle]]:
        """Runs dispatched and not yet collected, per job (check ``handle.finished``)."""

    @property
    def last_tick(self) -> datetime:
        """When the loop last started a step (aware UTC)."""

    @property
    def stop_signals(self) -> int:
        """Stop signals received; non-zero means shutting down."""

    @property
    def paused(self) -> frozenset[str]:
        """The jobs paused, as the loop last read them from the state store."""

    def request_run(self, job: str, trigger: str = "api", day: date | None = None) -> RunRequest:
        """Thread-safe: queue a run of ``job`` for its most recent slot (or the slot of logical date
        ``day``); the loop dispatches it."""

    def wake(self) -> None:
        """Thread-safe: make the loop step now."""
