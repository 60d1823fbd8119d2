"""healthchecks.io-style pings: a job's ``ping:`` URL hears every run's start and end.

A check on healthchecks.io (or a self-hosted Healthchecks) expects one URL per cron job and three
signals from it, which is why ``ping`` is a job key and not a notifier format:

* ``URL/start`` when the daemon dispatches a run (healthchecks.io then measures the run time and
  alerts if no end signal follows within the check's grace time);
* ``URL`` when the run succeeds, ``URL/fail`` when it fails or times out, each with the run's
  summary and last output lines as the body (unless ``send_log: false``);
* ``URL/log`` when a run was stopped on purpose (``interrupted`` by a shutdown or by
  ``concurrency: replace``): recorded in the check's log, its state left as it was.

Every ping of one run carries the same ``rid`` (a UUID), so healthchecks.io pairs the start with
the end even when runs of one job overlap (``concurrency: allow``).  Retries of one run are one
run here: one start, one end.  Pings go through the alert sender (its thread, timeout, retries
and redaction); a failed ping is logged like a failed alert, with the host only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from scheduler.ops.alerts import FAILED, AlertSender, run_payload
from scheduler.ops.ext import Extension

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView
    from scheduler.runs import RunHandle


@dataclass(frozen=True)
class PingTarget:
    """A job's ``ping`` as the sender reads it: the ``healthchecks`` format at the check's URL."""

    url: str
    timeout: timedelta
    retries: int
    send_log: bool = True
    format: str = "healthchecks"

    @classmethod
    def of(cls, ping: Any) -> PingTarget:
        """From the validated ``ping`` (a model or its compiled view)."""
        return cls(url=ping.url, timeout=ping.timeout, retries=ping.retries, send_log=ping.send_log)


def end_event(status: str) -> str:
    """The ping event that ends a run of ``status``."""
    if status == "success":
        return "ping_success"
    if status in FAILED:
        return "ping_failure"
    return "ping_log"


class RunPings(Extension):
    """Sends start and end pings for the runs of jobs that have a ``ping``.

    Invariant: a run gets an end ping only if it got a start ping (its ``rid`` is remembered from
    dispatch to collection), so a config reload that adds ``ping`` while a run is active does not
    close a run healthchecks.io never saw start.
    """

    name = "pings"

    def __init__(self, sender: AlertSender) -> None:
        self.sender = sender
        self._runs: dict[RunHandle, tuple[str, PingTarget]] = {}  # dispatched run -> (rid, target)

    def dispatched(self, daemon: DaemonView, handle: RunHandle) -> None:
        spec = daemon.config.jobs.get(handle.request.job)
        if spec is None or spec.ping is None:
            return
        rid = str(uuid.uuid4())
        target = PingTarget.of(spec.ping)
        self._runs[handle] = (rid, target)
        request = handle.request
        self.sender.send("ping_start", (target,), {
            "job": request.job, "rid": rid, "slot": request.slot.isoformat(), "trigger": request.trigger,
            "text": f"job {request.job} started ({request.trigger} run for slot {request.slot.isoformat()})"})

    def finished(self, daemon: DaemonView, handle: RunHandle) -> None:
        entry = self._runs.pop(handle, None)
        if entry is None:
            return
        rid, target = entry
        result = handle.result
        status = result.status if result is not None else "failed"
        record = daemon.store.get_run(result.run_id) if result is not None else None
        payload = run_payload(handle, record.logical_date.isoformat() if record is not None else None)
        job = handle.request.job
        detail = payload["error"] if status != "success" else f"{payload['duration']}s"
        payload.update(rid=rid, text=f"job {job} {status} (run {payload['run_id']}, logical date "
                                     f"{payload['logical_date']}, attempt {payload['attempt']}): {detail}")
        self.sender.send(end_event(status), (target,), payload)
