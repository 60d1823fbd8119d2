"""Run alerts: ``on_failure``, ``on_recovery`` and ``on_success`` webhooks, sent off the loop.

Which events fire (decided on the loop thread, from the run's result and the store's history):

* ``failure``: every run that ends ``failed`` or ``timeout`` (``interrupted`` runs were stopped
  on purpose, by a shutdown or ``concurrency: replace``, and are not alerted);
* ``recovery``: a success whose previous decisive run (``failed``, ``timeout`` or ``abandoned``;
  ``interrupted`` and ``skipped`` runs are passed over) was a failure.  The history comes from the
  state store, so a recovery is recognised across scheduler restarts; a failure this daemon saw
  also counts when a rerun of the same slot overwrote its record (one row per job and slot);
* ``success``: every success, for jobs that ask for it;
* ``freshness``: raised by :mod:`scheduler.ops.freshness`, sent to the ``on_failure`` notifiers.

Delivery happens on one background thread fed by a queue, so a slow or dead webhook never delays
scheduling.  Retries follow :mod:`scheduler.retry`: backoff with jitter, or the webhook's
``Retry-After`` (seconds or an HTTP date, capped), and a shutdown cuts a wait short.  Every string
in a payload passes through the daemon's :class:`~scheduler.redaction.Redactor` first, and webhook
URLs (Slack URLs are credentials) are never logged, only their host.  What goes on the wire for
each ``format`` is built by :mod:`scheduler.ops.alert_formats`; the healthchecks.io pings of a
job's ``ping:`` come from :mod:`scheduler.ops.pings` through the same sender.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scheduler.ops.alert_formats import render
from scheduler.ops.alert_formats import slack_body as slack_body  # re-exported: its home moved
from scheduler.ops.ext import Extension
from scheduler.redaction import Redactor, redact_all
from scheduler.retry import Backoff, retry_after, wait
from scheduler.status import RunStatus

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView, EventLog
    from scheduler.ops.alert_formats import Target  # a notifier model or its compiled view, or a ping
    from scheduler.runs import RunHandle
    from scheduler.stores.protocol import StateStore

FAILED = (RunStatus.FAILED, RunStatus.TIMEOUT)
DECISIVE_FAILURES = (*FAILED, RunStatus.ABANDONED)
NEUTRAL = (RunStatus.INTERRUPTED, RunStatus.SKIPPED, RunStatus.RUNNING)
MAX_BACKOFF = 30.0  # the longest wait between two attempts, a webhook's Retry-After included
# 1 s, 2 s, 4 s ... (each drawn from its lower half up), at most MAX_BACKOFF
BACKOFF = Backoff(initial=1.0, cap=MAX_BACKOFF, spread=0.5)


@dataclass(frozen=True)
class Alert:
    """One payload for one notifier.  ``payload`` is the generic JSON form."""

    event: str
    notifier: Target
    payload: dict[str, Any]


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class AlertSender:
    """A queue and one daemon thread that POSTs alerts with timeout and retries.

    Invariants: :meth:`send` never blocks and never raises; at most one delivery is in flight;
    an alert is attempted ``1 + notifier.retries`` times, waiting :data:`BACKOFF` or the
    webhook's ``Retry-After`` (at most :data:`MAX_BACKOFF`) between attempts, and then dropped
    with a log line; :meth:`close` interrupts a wait at once.  The thread starts on the first
    alert.  ``redact`` defaults to a :class:`Redactor` without known secrets (credential-shaped
    text is still masked).
    """

    def __init__(self, log: EventLog, redact: Callable[[str], str] | None = None,
                 on_outcome: Callable[[str, str], None] | None = None) -> None:
        self.log = log
        self.redact: Callable[[str], str] = redact or Redactor()
        self.on_outcome = on_outcome
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.hostname = socket.gethostname()

    def send(self, event: str, notifiers: tuple[Target, ...], payload: dict[str, Any]) -> None:
        if not notifiers:
            return
        body = redact_all({**payload, "event": event, "host": self.hostname}, self.redact)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="alert-sender", daemon=True)
                self._thread.start()
        for notifier in notifiers:
            try:
                self._queue.put_nowait(Alert(event, notifier, body))
            except queue.Full:
                self.log.error("alert dropped: queue full", job=payload.get("job"), alert=event)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (one attempt each from now on) for up to ``timeout`` seconds."""
        self._closing.set()
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(None)
        except queue.Full:  # a dead webhook backed the queue up: closing must not block shutdown
            pass
        self._thread.join(timeout)

    def _loop(self) -> None:
        import requests  # imported on first alert: nothing loads in daemons without notifiers

        session = requests.Session()
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._deliver(session, alert)

    def _deliver(self, session: Any, alert: Alert) -> None:
        notifier = alert.notifier
        try:
            request = render(alert.event, alert.payload, notifier)  # the format's URL, body and headers
        except Exception as exc:  # noqa: BLE001 - a payload no format can render must not stop the thread
            self.log.error("alert failed", alert=alert.event, job=alert.payload.get("job"),
                           target=_host(notifier.url), error=f"cannot render: {type(exc).__name__}")
            self._outcome(alert.event, "failed")
            return
        attempts = 1 + notifier.retries
        error = ""
        for attempt in range(1, attempts + 1):
            asked: float | None = None  # the webhook's Retry-After, in seconds
            try:
                response = session.post(request.url, data=request.body, headers=dict(request.headers),
                                        timeout=notifier.timeout.total_seconds())
                if 200 <= response.status_code < 300:
                    self.log.info("alert sent", alert=alert.event, job=alert.payload.get("job"),
                                  target=_host(notifier.url), attempt=attempt)
                    self._outcome(alert.event, "sent")
                    return
                error = f"HTTP {response.status_code}"
                retriable = response.status_code >= 500 or response.status_code in (408, 429)
                asked = retry_after(response.headers.get("Retry-After"), MAX_BACKOFF)
            except Exception as exc:  # noqa: BLE001 - any transport error is retried, then logged
                error = type(exc).__name__
                retriable = True
            if not retriable or attempt == attempts or self._closing.is_set():
                break
            delay = BACKOFF.delay(attempt, asked)
            self.log.info("alert retrying", alert=alert.event, job=alert.payload.get("job"),
                          target=_host(notifier.url), attempt=attempt, error=error, retry_in=round(delay, 3))
            if wait(delay, self._closing):
                break
        self.log.error("alert failed", alert=alert.event, job=alert.payload.get("job"),
                       target=_host(notifier.url), error=error)
        self._outcome(alert.event, "failed")

    def _outcome(self, event: str, outcome: str) -> None:
        if self.on_outcome is not None:
            try:
                self.on_outcome(event, outcome)
            except Exception:  # noqa: BLE001,S110 - metrics must not break delivery
                pass


def run_payload(handle: RunHandle, logical_date: str | None) -> dict[str, Any]:
    """The generic fields of a run alert (before redaction)."""
    result = handle.result
    request = handle.request
    return {
        "job": request.job,
        "run_id": result.run_id if result is not None else handle.run_id,
        "logical_date": logical_date,
        "slot": request.slot.isoformat(),
        "trigger": request.trigger,
        "attempt": result.attempt if result is not None else None,
        "status": result.status if result is not None else RunStatus.FAILED,
        "duration": round(result.duration, 3) if result is not None else None,
        "exit_code": result.exit_code if result is not None else None,
        "error": (result.error if result is not None else "the run ended without a result"),
        "last_lines": list(result.metrics.get("last_lines") or []) if result is not None else [],
    }


def previous_failures(store: StateStore, job: str, run_id: int | None, depth: int = 50) -> int:
    """Failures in a row among the job's newest runs other than ``run_id`` (neutral ones passed over).

    Called for a run that just finished, so those are the runs before it (up to ``depth``).
    """
    streak = 0
    for record in store.history(job, depth + 1):
        if record.id == run_id or record.status in NEUTRAL:
            continue
        if record.status in DECISIVE_FAILURES:
            streak += 1
            continue
        break
    return streak


class RunAlerts(Extension):
    """Decides failure/recovery/success alerts for finished runs and hands them to the sender."""

    name = "alerts"

    def __init__(self, sender: AlertSender) -> None:
        self.sender = sender
        self._failing: set[str] = set()  # jobs whose last decisive run seen here failed

    def finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        job = handle.request.job
        spec = daemon.config.jobs.get(job)
        if spec is None or not (spec.on_failure or spec.on_recovery or spec.on_success):
            return
        result = handle.result
        status = result.status if result is not None else RunStatus.FAILED
        if status not in FAILED and status != RunStatus.SUCCESS:
            return
        record = daemon.store.get_run(result.run_id) if result is not None else None
        logical_date = record.logical_date.isoformat() if record is not None else None
        payload = run_payload(handle, logical_date)
        where = f"run {payload['run_id']}, logical date {logical_date}, attempt {payload['attempt']}"
        if status in FAILED:
            self._failing.add(job)
            streak = previous_failures(daemon.store, job, payload["run_id"]) + 1
            payload["consecutive_failures"] = streak
            payload["text"] = (f"[FAILED] job {job} {status} ({where}, {payload['duration']}s): "
                               f"{payload['error']}")
            control = daemon.store.job_controls().get(job) if getattr(spec, "pause_after_failures", None) else None
            # only the failure that paused the job says so, so the pause is announced once
            payload["paused"] = bool(control and control.paused and control.run_id == payload["run_id"])
            if payload["paused"] and control is not None:
                payload["text"] += f"; job paused after {control.reason}: resume with 'scheduler resume {job}'"
            self.sender.send("failure", spec.on_failure, payload)
            return
        failures = previous_failures(daemon.store, job, payload["run_id"])
        if job in self._failing:
            self._failing.discard(job)
            failures = max(failures, 1)
        if failures and spec.on_recovery:
            recovered = {**payload, "previous_failures": failures,
                         "text": f"[RECOVERED] job {job} succeeded after {failures} failed run(s) ({where})"}
            self.sender.send("recovery", spec.on_recovery, recovered)
        if spec.on_success:
            self.sender.send("success", spec.on_success,
                             {**payload, "text": f"[OK] job {job} succeeded ({where}, {payload['duration']}s)"})
