"""The base of the daemon extensions in this package.

The daemon calls, on the loop thread, ``on_tick(daemon)`` at the end of every loop step,
``on_dispatched(daemon, handle)`` for every run it dispatches, ``on_finished(daemon, handle)`` for
every run it collects, ``on_slot(daemon, job, outcome, count)`` for slots it did not run
(``skipped``, ``missed``) and ``on_shutdown(daemon)`` once at the end (the
:class:`~scheduler.daemon_view.DaemonExtension` protocol).  The daemon guards its hook calls too,
but :class:`Extension` names the failing hook in its log line.  Subclasses implement ``tick``,
``dispatched``, ``finished``, ``slot`` and ``shutdown``; all must return quickly (no network IO, no
sleeps): slow work belongs on a thread of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView
    from scheduler.runs import RunHandle


class Extension:
    """A daemon extension whose failures are logged, never propagated into the loop."""

    name = "extension"

    def on_tick(self, daemon: DaemonView) -> None:
        try:
            self.tick(daemon)
        except Exception as exc:  # noqa: BLE001 - the scheduling loop must survive its extensions
            daemon.log.error("operations extension failed", extension=self.name, hook="tick", error=str(exc))

    def on_dispatched(self, daemon: DaemonView, handle: RunHandle) -> None:
        try:
            self.dispatched(daemon, handle)
        except Exception as exc:  # noqa: BLE001 - see on_tick
            daemon.log.error("operations extension failed", extension=self.name, hook="dispatched",
                             job=handle.request.job, error=str(exc))

    def on_finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        try:
            self.finished(daemon, handle)
        except Exception as exc:  # noqa: BLE001 - see on_tick
            daemon.log.error("operations extension failed", extension=self.name, hook="finished",
                             job=handle.request.job, error=str(exc))

    def on_slot(self, daemon: DaemonView, job: str, outcome: str, count: int) -> None:
        try:
            self.slot(daemon, job, outcome, count)
        except Exception as exc:  # noqa: BLE001 - see on_tick
            daemon.log.error("operations extension failed", extension=self.name, hook="slot", job=job,
                             error=str(exc))

    def on_shutdown(self, daemon: DaemonView) -> None:
        try:
            self.shutdown(daemon)
        except Exception as exc:  # noqa: BLE001 - see on_tick
            daemon.log.error("operations extension failed", extension=self.name, hook="shutdown", error=str(exc))

    def slot(self, daemon: DaemonView, job: str, outcome: str, count: int) -> None:
        """Called on the loop thread for ``count`` slots of ``job`` not run (``skipped``/``missed``)."""

    def shutdown(self, daemon: DaemonView) -> None:
        """Called on the loop thread once, after the last run was collected."""

    def tick(self, daemon: DaemonView) -> None:
        """Called on the loop thread after each step."""

    def dispatched(self, daemon: DaemonView, handle: RunHandle) -> None:
        """Called on the loop thread for each run dispatched (it may still wait for a run it replaces)."""

    def finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        """Called on the loop thread for each collected run (``handle.result`` may be None)."""
