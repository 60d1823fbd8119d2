"""The base of the daemon extensions in this package.

The daemon calls ``on_tick(daemon)`` at the end of every loop step and ``on_finished(daemon,
handle)`` for every run it collects, both on the loop thread.  An exception escaping a hook would
end the loop, so :class:`Extension` catches and logs everything its subclasses raise.  Subclasses
implement ``tick`` and ``finished``; both must return quickly (no network IO, no sleeps): slow
work belongs on a thread of its own.
"""

from __future__ import annotations

from typing import Any


class Extension:
    """A daemon extension whose failures are logged, never propagated into the loop."""

    name = "extension"

    def on_tick(self, daemon: Any) -> None:
        try:
            self.tick(daemon)
        except Exception as exc:  # noqa: BLE001 - the scheduling loop must survive its extensions
            daemon.log.error("operations extension failed", extension=self.name, hook="tick", error=str(exc))

    def on_finished(self, daemon: Any, handle: Any) -> None:
        try:
            self.finished(daemon, handle)
        except Exception as exc:  # noqa: BLE001 - see on_tick
            daemon.log.error("operations extension failed", extension=self.name, hook="finished",
                             job=handle.request.job, error=str(exc))

    def tick(self, daemon: Any) -> None:
        """Called on the loop thread after each step."""

    def finished(self, daemon: Any, handle: Any) -> None:
        """Called on the loop thread for each collected run (``handle.result`` may be None)."""
