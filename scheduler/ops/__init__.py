"""Operations: health/metrics endpoint, alerts, freshness, backfill and status.

:func:`attach` wires the daemon-side features into a :class:`~scheduler.daemon.Daemon` before it
serves.  Alerts, pings and freshness checks are always installed (they cost nothing without
notifiers, ``ping`` or ``expect_success_within``, and so follow config reloads); the HTTP
endpoint and its metrics only when ``http.listen`` is set at start, and only then is
prometheus-client imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.ops.ext import Extension

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView


def attach(daemon: DaemonView) -> None:
    """Wire the configured operations features into a daemon before it serves.

    Raises ``ConfigError`` when ``http.listen`` is set but cannot be bound.
    """
    from scheduler import clock
    from scheduler.ops.alerts import AlertSender, RunAlerts
    from scheduler.ops.freshness import FreshnessWatch
    from scheduler.ops.pings import RunPings

    redactor = daemon.redactor
    metrics = None
    if daemon.config.http.listen:
        from scheduler.ops.metrics import OpsMetrics

        metrics = OpsMetrics(daemon)
        daemon.extensions.append(metrics)
    sender = AlertSender(daemon.log, redactor.redact if redactor is not None else None,
                         on_outcome=metrics.count_alert if metrics is not None else None)
    daemon.extensions.append(RunAlerts(sender))
    daemon.extensions.append(RunPings(sender))
    daemon.extensions.append(FreshnessWatch(sender, clock.now(),
                                            on_change=metrics.set_overdue if metrics is not None else None))
    closers: list[Callable[[], None]] = [lambda: sender.close(2.0)]
    if metrics is not None:
        from scheduler.ops.http import OpsServer

        server = OpsServer(daemon, metrics)
        server.start()
        closers.append(server.close)
    daemon.extensions.append(_Closer(closers))


class _Closer(Extension):
    """At shutdown: flush alerts raised by the last runs (bounded), then stop the endpoint."""

    name = "shutdown"

    def __init__(self, closers: list[Callable[[], None]]) -> None:
        self.closers = closers

    def shutdown(self, daemon: DaemonView) -> None:
        for close in self.closers:
            close()
