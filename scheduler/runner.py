"""How one run executes: attempts in child processes, timeout, retries, and the record of it all.

The runner is the one code path for scheduled runs (``scheduler run``) and foreground runs
(``run-job``).  Every attempt is a child process in its own session: ``command`` jobs exec their
argv directly, the other kinds run in ``python -m scheduler.worker``, or, in the daemon, in a
child forked by the fork server (:mod:`scheduler.forkserver`) that runs the same worker.  The
daemon's process never imports pandas or pyarrow.

Invariants: the run row is ``running`` while an attempt or a retry wait is in progress and ends
in exactly one final status; a watermark is stored only with ``success``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler import clock, resultfiles, retry
from scheduler.config.compiled import CompiledJob, Config, spec_json
from scheduler.kinds.registry import Registry, current, resolve
from scheduler.logs import Redactor, get_logger
from scheduler.output import RunOutput, tee
from scheduler.process import (
    ChildTable,
    LinePump,
    group_alive,
    stop_group,
)
from scheduler.runs import RunHandle, RunRequest, RunResult, decide
from scheduler.status import RunStatus
from scheduler.stores.protocol import StateStore

__all__ = ["RunHandle", "RunRequest", "RunResult", "Runner", "decide"]

if TYPE_CHECKING:
    from scheduler.forkserver import ForkServer

_LEVELS = {"debug", "info", "warning", "error", "critical"}


class Runner:
    """Executes run requests against one loaded config and records them in the store."""

    def __init__(self, config: Config, store: StateStore, data_dir: Path, children: ChildTable,
                 log_level: str = "info", forkserver: ForkServer | None = None,
                 registry: Registry | None = None) -> None:
        self.forkserver = forkserver  # worker runs are forked from it when given (the daemon's)
        self.config = config
        self.registry = current() if registry is None else registry  # what each kind is and how it runs
        self.store = store
        self.data_dir = data_dir
        self.children = children
        self.log_level = log_level
        self.redactor = Redactor(config.secrets)

    def sweep_result_files(self) -> int:
        """Remove result files left by runners that were killed (call before running anything)."""
        def running(run_id: int) -> bool:
            record = self.store.get_run(run_id)
            return record is not None and record.status == RunStatus.RUNNING

        try:
            removed = resultfiles.sweep(self.data_dir, running)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not stop a start
            get_logger().warning("stale result files not removed", error=str(exc))
            return 0
        if removed:
            get_logger().info("stale result files removed", count=len(removed),
                              directory=str(resultfiles.result_dir(self.data_dir)))
        return len(removed)

    # --- one run, all attempts -----------------------------------------------------------------
    def execute(self, request: RunRequest, handle: RunHandle | None = None) -> RunResult:
        """Run all attempts and record them; ``handle.finished`` is set however this ends."""
        handle = handle or RunHandle(request)
        try:
            return self._execute(request, handle)
        except Exception as exc:  # noqa: BLE001 - e.g. the store is unusable; never leave waiters hanging
            get_logger(job=request.job).error("run could not be recorded", error=str(exc))
            handle.result = RunResult(RunStatus.FAILED, handle.run_id or 0, 0, error=f"scheduler error: {exc}")
            return handle.result
        finally:
            handle.finished.set()

    def _execute(self, request: RunRequest, handle: RunHandle) -> RunResult:
        spec = self.config.jobs[request.job]
        schedule = self.config.schedules[request.job]
        start, end, logical_date = request.data_interval(schedule)
        # a daemon sharing its store with other replicas claims before it dispatches (handle.run_id)
        run_id = handle.run_id if handle.run_id is not None else self.store.start_run(
            request.job, request.slot, logical_date, request.trigger)
        if run_id is None:
            reason = f"a run of {request.job} for slot {request.slot.isoformat()} is already in progress"
            get_logger(job=request.job).warning("run not started", reason=reason)
            handle.result = RunResult(RunStatus.SKIPPED, 0, 0, error=reason)
            return handle.result
        handle.run_id = run_id
        log = get_logger(job=request.job, run_id=run_id)
        log.info("run started", slot=request.slot.isoformat(), logical_date=logical_date.isoformat(),
                 trigger=request.trigger, attempt=1)
        began = clock.monotonic()
        attempt, result = 0, None
        output = RunOutput.open(self.store, run_id, self.redactor.redact,
                                self.config.state.max_output)
        try:
            while True:
                attempt += 1
                if attempt > 1:
                    self.store.set_attempt(run_id, attempt)
                    output.note(f"[attempt {attempt}]")
                result = self._attempt(spec, request, handle, run_id, attempt, (start, end, logical_date),
                                       log.bind(attempt=attempt), output)
                if result.status in (RunStatus.SUCCESS, RunStatus.INTERRUPTED) or attempt > spec.retries:
                    break
                # retry_delay doubling per attempt, at most retry_max_delay, drawn from its upper half
                backoff = retry.Backoff(spec.retry_delay.total_seconds(), spec.retry_max_delay.total_seconds(),
                                        spread=0.5)
                delay = backoff.delay(attempt)
                log.warning("attempt failed, retrying", attempt=attempt, error=result.error, retry_in=round(delay, 2))
                if _sleep_unless_cancelled(handle, delay):
                    result = RunResult(RunStatus.INTERRUPTED, run_id, attempt, error=handle.cancel_reason)
                    break
        except Exception as exc:  # noqa: BLE001 - the record must end in a final status whatever broke
            result = RunResult(RunStatus.FAILED, run_id, attempt, error=f"scheduler error: {exc}")
        output.close()  # all of it stored before the record says the run is over (logs --follow stops then)
        duration = clock.monotonic() - began
        result = self._redacted(result)
        watermark = result.metrics.get("watermark") if result.status == RunStatus.SUCCESS else None
        self.store.finish_run(run_id, result.status, exit_code=result.exit_code, signal=result.signal,
                              duration=duration, error=result.error, metrics=dict(result.metrics),
                              watermark=(request.job, str(watermark)) if watermark is not None else None)
        level = "info" if result.status == RunStatus.SUCCESS else "error"
        getattr(log, level)("run finished", status=result.status, attempt=attempt, exit_code=result.exit_code,
                            duration=round(duration, 3), error=result.error,
                            **{k: v for k, v in result.metrics.items() if k.startswith(("rows", "pages"))})
        final = RunResult(result.status, run_id, attempt, result.exit_code, result.signal, result.timed_out,
                          duration, result.error, result.metrics)
        handle.result = final
        return final

    def _redacted(self, result: RunResult) -> RunResult:
        """The result with secrets masked in everything that is stored or alerted on."""
        metrics = dict(result.metrics)
        if "last_lines" in metrics:
            metrics["last_lines"] = [self.redactor.redact(str(line)) for line in metrics["last_lines"]]
        error = self.redactor.redact(result.error) if result.error else result.error
        return RunResult(result.status, result.run_id, result.attempt, result.exit_code, result.signal,
                         result.timed_out, result.duration, error, metrics)

    # --- one attempt ---------------------------------------------------------------------------
    def _attempt(self, spec: CompiledJob, request: RunRequest, handle: RunHandle, run_id: int, attempt: int,
                 interval: tuple[datetime, datetime, Any], log: Any, output: RunOutput | None = None) -> RunResult:
        start, end, logical_date = interval
        params = {**spec.params, **request.params}
        env = {**os.environ, **spec.env,
               "SCHEDULER_JOB": request.job, "SCHEDULER_RUN_ID": str(run_id), "SCHEDULER_ATTEMPT": str(attempt),
               "SCHEDULER_SLOT": request.slot.isoformat(), "SCHEDULER_LOGICAL_DATE": logical_date.isoformat(),
               "SCHEDULER_DATA_INTERVAL_START": start.isoformat(), "SCHEDULER_DATA_INTERVAL_END": end.isoformat(),
               "SCHEDULER_DATA_DIR": str(self.data_dir), "SCHEDULER_PARAMS": json.dumps(params, default=str)}
        result_file: Path | None = None
        kind = self.registry.get(spec.kind)
        cwd = getattr(spec, "cwd", None)
        if kind.argv is not None:  # a kind that is its own process
            argv, stdin_data = list(resolve(kind.argv)(spec)), None
        else:  # a kind that runs inside the worker child
            result_file = resultfiles.create(self.data_dir, run_id)
            argv = [sys.executable, "-m", "scheduler.worker"]
            stdin_data = json.dumps({
                "kind": spec.kind, "job": request.job, "spec": spec_json(spec),
                "run_id": run_id, "attempt": attempt, "slot": request.slot.isoformat(),
                "logical_date": logical_date.isoformat(), "data_interval_start": start.isoformat(),
                "data_interval_end": end.isoformat(), "data_dir": str(self.data_dir), "params": params,
                "watermark": self.store.watermark(request.job), "result_path": str(result_file),
                "sections": {name: spec_json(getattr(self.config, name)) for name in kind.passes},
                "log_level": self.log_level, "secrets": sorted(self.config.secrets),
            }, default=str).encode()
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [cwd, os.getcwd(), env.get("PYTHONPATH")]))
            if self.registry.plugins:  # the worker must know the same kinds
                env.update(self.registry.environ())
        began = clock.monotonic()
        try:
            proc = self._start(argv, env, cwd, stdin_data is not None, worker=result_file is not None)
        except OSError as exc:
            if result_file is not None:
                result_file.unlink(missing_ok=True)
            where = f" in {cwd}" if cwd else ""
            return RunResult(RunStatus.FAILED, run_id, attempt,
                             error=f"cannot start {argv[0]}{where}: {exc.strerror or exc}")
        handle.pgid = proc.pid
        log.debug("child started", pid=proc.pid, argv=argv if kind.argv is not None else None)
        tail: deque[str] = deque(maxlen=50)
        pumps = [LinePump(proc.stdout, tee(lambda line: _relay(log, line, "stdout"), output, "stdout"), lines=tail),
                 LinePump(proc.stderr, tee(lambda line: _relay(log, line, "stderr"), output, "stderr"), lines=tail)]
        for pump in pumps:
            pump.start()
        if stdin_data is not None:
            _feed(proc, stdin_data)
        exited = threading.Event()

        def _wait() -> None:
            proc.wait()
            exited.set()
            handle.wake.set()

        threading.Thread(target=_wait, daemon=True, name=f"wait-{proc.pid}").start()
        timeout = spec.timeout.total_seconds() if spec.timeout else None
        deadline = began + timeout if timeout else None
        timed_out = False
        try:
            while not exited.is_set():
                remaining = None if deadline is None else max(0.0, deadline - clock.monotonic())
                handle.wake.wait(remaining)
                handle.wake.clear()
                if exited.is_set():
                    break
                if handle.cancel_reason is not None:
                    grace = spec.kill_grace.total_seconds() if handle.cancel_grace is None else handle.cancel_grace
                    log.warning("stopping run", reason=handle.cancel_reason, grace=grace)
                    stop_group(proc.pid, 0 if handle.force else grace)
                    exited.wait()
                    break
                if deadline is not None and clock.monotonic() >= deadline:
                    timed_out = True
                    log.error("run timed out", timeout=timeout, kill_grace=spec.kill_grace.total_seconds())
                    stop_group(proc.pid, spec.kill_grace.total_seconds())
                    exited.wait()
                    break
            # The leader is gone; descendants left in its group (background jobs) go with it.
            if group_alive(proc.pid):
                stop_group(proc.pid, min(2.0, spec.kill_grace.total_seconds()))
        finally:
            self.children.release(proc.pid)
            handle.pgid = None
        for pump in pumps:
            pump.join(timeout=5)
        duration = clock.monotonic() - began
        worker = _read_result(result_file)
        status, error = decide(proc.returncode, timed_out, handle.cancel_reason,
                               worker.get("error") or getattr(proc, "lost", None))
        code = proc.returncode if proc.returncode is not None and proc.returncode >= 0 else None
        sig = -proc.returncode if proc.returncode is not None and proc.returncode < 0 else None
        if isinstance(worker.get("exit_code"), int) and sig is None:
            code = worker["exit_code"]  # the work's own exit status (a container's), not the worker's
        metrics = dict(worker.get("metrics") or {})
        if status != RunStatus.SUCCESS and tail:
            metrics["last_lines"] = list(tail)[-10:]
        return RunResult(status, run_id, attempt, code, sig, timed_out, duration, error, metrics)

    def _start(self, argv: list[str], env: dict[str, str], cwd: str | None, stdin: bool,
               worker: bool) -> Any:
        """The one place an attempt's process starts: a worker run is forked by the fork server
        when there is one that can serve, else (and for ``command`` jobs) ``argv`` is spawned.
        Either way the result reads like ``subprocess.Popen`` and leads its own session."""
        if worker and self.forkserver is not None:
            proc = self.forkserver.spawn(env, cwd)
            if proc is not None:
                return proc
        return self.children.spawn(argv, env=env, cwd=cwd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)


def _sleep_unless_cancelled(handle: RunHandle, seconds: float) -> bool:
    """Wait ``seconds``; True (early) if the run was cancelled meanwhile (``handle.wake`` rings)."""
    return retry.wait(seconds, handle.wake, lambda: handle.cancel_reason is not None, clock.monotonic)


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass


def _read_result(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    finally:
        path.unlink(missing_ok=True)


def _relay(log: Any, line: str, stream: str) -> None:
    """Log one line of child output as ``output`` with ``line`` and ``stream`` (stdout|stderr, both
    at info: programs write progress to stderr); structured lines from the worker keep their
    level and fields."""
    if line.startswith("{") and line.endswith("}"):
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if isinstance(event, dict) and "event" in event:
            level = str(event.pop("level", "info")).lower()
            event.pop("timestamp", None)
            for key in ("job", "run_id", "attempt", "logger"):
                event.pop(key, None)
            message = str(event.pop("event"))
            getattr(log, level if level in _LEVELS else "info")(message, **event)
            return
    log.info("output", line=line, stream=stream)
