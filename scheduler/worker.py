"""Child-process entry point for in-process kinds: ``python -m scheduler.worker``.

Reads one JSON payload from stdin (job spec, run context, settings), runs the kind's executor,
writes ``{"metrics": ..., "error": ...}`` to the payload's ``result_path`` and exits 0 on success,
1 on failure.  Logs are JSON lines on stdout, which the runner relays line by line.  A SIGTERM
(timeout, shutdown, ``replace``) raises :class:`~scheduler.stopping.Stopped` so ``finally``
blocks and the kinds' own handlers (stopping a container) run; a kind may defer SIGTERM from a
publish step on (:func:`~scheduler.stopping.sigterm_deferred`), and once the result is written
SIGTERM is ignored (:func:`~scheduler.stopping.settle`), so published work is never recorded as
failed.  A :class:`~scheduler.errors.SchedulerError` is an expected failure: one line, no
traceback; anything else is a bug and its traceback is logged.
"""

from __future__ import annotations

import io
import json
import signal
import sys
import traceback
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scheduler.errors import JobFailed, SchedulerError
from scheduler.kinds.base import RunContext
from scheduler.kinds.registry import Kind, Registry, current, resolve
from scheduler.leaving import leave
from scheduler.logs import configure, get_logger
from scheduler.stopping import Stopped, raise_on_sigterm, settle


def _sections(kind: Kind, registry: Registry, payload: dict[str, Any]) -> dict[str, Any]:
    """The config sections the kind takes (``docker:`` for containers), validated with their models;
    other kinds build none of them."""
    given = payload.get("sections") or {}
    return {name: registry.section_model(name).model_validate(given[name]) for name in kind.passes if given.get(name)}


def _write_result(path: str, payload: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
    tmp.replace(path)


def main() -> int:
    payload = json.loads(sys.stdin.read())
    redactor = configure(payload.get("log_level", "info"), "json", payload.get("secrets", ()), stream=sys.stdout)
    raise_on_sigterm()
    log = get_logger(job=payload["job"], run_id=payload["run_id"], attempt=payload["attempt"])
    result_path = payload["result_path"]
    kind: Kind | None = None
    try:
        registry = current()
        kind = registry.get(payload["kind"])
        spec = resolve(kind.spec).model_validate(payload["spec"])
        ctx = RunContext(
            job=payload["job"], run_id=payload["run_id"], attempt=payload["attempt"],
            slot=datetime.fromisoformat(payload["slot"]), logical_date=date.fromisoformat(payload["logical_date"]),
            data_interval_start=datetime.fromisoformat(payload["data_interval_start"]),
            data_interval_end=datetime.fromisoformat(payload["data_interval_end"]),
            data_dir=Path(payload["data_dir"]), params=payload.get("params") or {},
            watermark=payload.get("watermark"), log=log,
            **_sections(kind, registry, payload),
        )
        if kind.executor is None:  # the runner sends only worker kinds here
            raise SchedulerError(f"job kind {kind.name!r} runs as its own process, not in the worker")
        metrics = resolve(kind.executor)(spec, ctx) or {}
    except Stopped as exc:
        _write_result(result_path, {"error": f"stopped by {signal.Signals(exc.signum).name}"})
        settle()
        return 128 + exc.signum
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded reason
        if isinstance(exc, SchedulerError) and str(exc):
            # an expected failure (the source is down, a check failed, the container exited 3):
            # its message is the whole story, one line, and a traceback would only bury it
            message = redactor.redact(" ".join(str(exc).split()))
            log.error("run failed", error=message)
        else:  # a bug, in a job's code or ours: the traceback is what finds it
            message = redactor.redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            log.error("run failed", error=message, traceback=redactor.redact(traceback.format_exc(limit=8)))
        result: dict[str, Any] = {"error": message}
        # A kind whose work has its own exit status (a container) records that, not ours.
        if isinstance(exc, JobFailed) and exc.work_exit_code is not None:
            result["exit_code"] = exc.work_exit_code
        _write_result(result_path, result)
        settle()
        return 1
    _write_result(result_path, {"metrics": metrics})
    settle()
    return 0


if __name__ == "__main__":
    if isinstance(sys.stdout, io.TextIOWrapper):  # always, unless the launcher replaced it
        sys.stdout.reconfigure(line_buffering=True)
    leave(main())
