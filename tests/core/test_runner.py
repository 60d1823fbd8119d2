"""Runner behaviour with real /bin/sh processes and a real SQLite store."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime

import pytest
from coretools import processes_with, unique_seconds
from polling import wait_for

from scheduler.config import load_config
from scheduler.logs import configure
from scheduler.process import ChildTable
from scheduler.runner import RunHandle, Runner, RunRequest, decide
from scheduler.state import StateStore

SLOT = datetime(2026, 11, 6, 2, 15, tzinfo=UTC)


class LogBuffer(io.StringIO):
    """A thread-safe text sink for structlog that can be searched while runs are live."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(line) for line in self.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def logs() -> LogBuffer:
    buf = LogBuffer()
    configure("debug", "json", stream=buf)
    return buf


@pytest.fixture
def make_runner(write_config, tmp_path, logs):
    """Build a Runner (and its store) for a YAML config; logs go to ``logs`` with its secrets."""

    def make(text: str) -> tuple[Runner, StateStore]:
        config = load_config(write_config(text))
        configure("debug", "json", config.secrets, stream=logs)
        store = StateStore.open(tmp_path / "state.db")
        return Runner(config, store, tmp_path / "data", ChildTable(), "debug"), store

    return make


@pytest.mark.parametrize(
    ("returncode", "timed_out", "cancel", "worker_error", "expected"),
    [
        (0, False, None, None, ("success", None)),
        (0, True, "scheduler shutting down", None, ("success", None)),  # it finished (or published) first
        (3, False, None, None, ("failed", "exited with code 3")),
        (1, False, None, "ValueError: boom", ("failed", "ValueError: boom")),
        (-9, False, None, None, ("failed", "killed by signal SIGKILL")),
        (-15, True, None, None, ("timeout", "timed out")),
        (-15, False, "scheduler shutting down", None, ("interrupted", "scheduler shutting down")),
    ],
)
def test_decide_outcome_table(returncode, timed_out, cancel, worker_error, expected):
    assert decide(returncode, timed_out, cancel, worker_error) == expected


def test_exit_code_is_recorded(make_runner, tmp_path):
    runner, store = make_runner("""
        jobs:
          three: {kind: command, shell: "echo going; exit 3"}
    """)
    result = runner.execute(RunRequest("three", SLOT))
    assert (result.status, result.exit_code) == ("failed", 3)
    record = store.get_run(result.run_id)
    assert record.status == "failed" and record.exit_code == 3 and record.error == "exited with code 3"
    assert record.metrics["last_lines"] == ["going"]


def test_timeout_kills_whole_process_group(make_runner, tmp_path):
    first, second = f"sleep {unique_seconds(101)}", f"sleep {unique_seconds(102)}"
    runner, store = make_runner(f"""
        jobs:
          slow: {{kind: command, shell: "{first} & {second}", timeout: 1s, kill_grace: 1s}}
    """)
    result = runner.execute(RunRequest("slow", SLOT))
    assert result.status == "timeout" and result.timed_out
    assert processes_with(first) == [] and processes_with(second) == []
    assert store.get_run(result.run_id).status == "timeout"


def test_timeout_escalates_to_sigkill_when_term_is_ignored(make_runner, tmp_path):
    sleep = f"sleep {unique_seconds(103)}"
    runner, _ = make_runner(f"""
        jobs:
          stubborn: {{kind: command, shell: "trap '' TERM; {sleep} & wait; {sleep}", timeout: 0.5s, kill_grace: 0.5s}}
    """)
    result = runner.execute(RunRequest("stubborn", SLOT))
    assert result.status == "timeout"
    assert processes_with(sleep) == []


def test_background_children_do_not_outlive_a_finished_run(make_runner, tmp_path):
    sleep = f"sleep {unique_seconds(104)}"
    runner, _ = make_runner(f"""
        jobs:
          leaky: {{kind: command, shell: "{sleep} & echo done", kill_grace: 1s}}
    """)
    result = runner.execute(RunRequest("leaky", SLOT))
    assert result.status == "success"
    assert processes_with(sleep) == []


def test_retries_with_backoff_until_success(make_runner, tmp_path):
    counter = tmp_path / "count"
    runner, store = make_runner(f"""
        jobs:
          flaky:
            kind: command
            shell: "n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 3 ]"
            retries: 3
            retry_delay: 0.05s
            retry_max_delay: 0.2s
    """)
    result = runner.execute(RunRequest("flaky", SLOT))
    assert (result.status, result.attempt) == ("success", 3)
    assert store.get_run(result.run_id).attempt == 3


def test_retries_exhausted_records_failure(make_runner, tmp_path):
    runner, store = make_runner("""
        jobs:
          broken: {kind: command, command: ["false"], retries: 2, retry_delay: 0.01s}
    """)
    result = runner.execute(RunRequest("broken", SLOT))
    assert (result.status, result.attempt, result.exit_code) == ("failed", 3, 1)


def test_output_is_streamed_while_the_job_runs(make_runner, tmp_path, logs):
    gate = tmp_path / "gate"
    runner, _ = make_runner(f"""
        jobs:
          chatty: {{kind: command, shell: "echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second",
                   timeout: 30s}}
    """)
    handle = RunHandle(RunRequest("chatty", SLOT))
    thread = threading.Thread(target=runner.execute, args=(handle.request, handle))
    thread.start()
    # The job only finishes after we saw its first line: streaming after exit would deadlock here.
    wait_for(lambda: any(e.get("line") == "first" for e in logs.events()), what="first line while running")
    assert not handle.finished.is_set()
    gate.touch()
    thread.join(30)
    events = [e for e in logs.events() if e.get("event") == "output"]
    assert [e["line"] for e in events] == ["first", "second"]
    assert all(e["job"] == "chatty" and e["run_id"] == handle.run_id and e["attempt"] == 1 for e in events)


def test_cancel_records_interrupted(make_runner, tmp_path):
    sleep = f"sleep {unique_seconds(105)}"
    runner, store = make_runner(f"""
        jobs:
          long: {{kind: command, shell: "{sleep}"}}
    """)
    handle = RunHandle(RunRequest("long", SLOT))
    thread = threading.Thread(target=runner.execute, args=(handle.request, handle))
    thread.start()
    wait_for(lambda: processes_with(sleep), what="job start")
    handle.cancel("scheduler shutting down", grace=2)
    thread.join(10)
    assert handle.result.status == "interrupted"
    assert store.get_run(handle.run_id).error == "scheduler shutting down"
    assert processes_with(sleep) == []


def test_rerun_of_same_slot_updates_one_record(make_runner, tmp_path):
    runner, store = make_runner("""
        jobs:
          once: {kind: command, command: ["true"]}
    """)
    first = runner.execute(RunRequest("once", SLOT))
    second = runner.execute(RunRequest("once", SLOT, trigger="manual"))
    assert first.run_id == second.run_id
    assert len(store.history("once")) == 1


def test_python_job_gets_context_and_returns_metrics(make_runner, tmp_path):
    (tmp_path / "mod_ctx.py").write_text(
        "def job(ctx):\n"
        "    ctx.log.info('hello from python', value=ctx.params['value'])\n"
        "    return {'rows_written': 7, 'watermark': ctx.logical_date.isoformat(),\n"
        "            'seen': [ctx.job, ctx.run_id, ctx.attempt, str(ctx.data_dir)]}\n")
    runner, store = make_runner(f"""
        jobs:
          py:
            kind: python
            schedule: "15 2 * * *"
            function: mod_ctx:job
            cwd: {tmp_path}
            params: {{value: 5}}
    """)
    result = runner.execute(RunRequest("py", SLOT))
    assert result.status == "success", result.error
    record = store.get_run(result.run_id)
    assert record.rows == 7 and record.logical_date.isoformat() == "2026-11-05"
    assert record.metrics["seen"] == ["py", result.run_id, 1, str(tmp_path / "data")]
    assert store.watermark("py") == "2026-11-05"


def test_a_worker_ends_like_an_interpreter_threads_and_atexit_included(make_runner, tmp_path):
    """The worker leaves without tearing down its modules, but as an interpreter would: a job's
    non-daemon thread finishes and its ``atexit`` handlers run before the run is over."""
    thread_mark, exit_mark = tmp_path / "thread.txt", tmp_path / "atexit.txt"
    (tmp_path / "mod_exit.py").write_text(
        "import atexit, threading\n"
        "def job(ctx):\n"
        "    go = threading.Event()\n"
        f"    threading.Thread(target=lambda: (go.wait(), open({str(thread_mark)!r}, 'w').write('done'))).start()\n"
        f"    atexit.register(lambda: open({str(exit_mark)!r}, 'w').write('ran'))\n"
        "    threading.Timer(0.05, go.set).start()\n"
        "    return {'rows_written': 1}\n")
    runner, store = make_runner(f"""
        jobs:
          py: {{kind: python, function: "mod_exit:job", cwd: {tmp_path}}}
    """)
    result = runner.execute(RunRequest("py", SLOT))
    assert result.status == "success", result.error
    assert thread_mark.read_text() == "done" and exit_mark.read_text() == "ran"
    assert store.get_run(result.run_id).rows == 1


def test_python_job_exception_fails_with_reason_and_keeps_watermark(make_runner, tmp_path):
    (tmp_path / "mod_fail.py").write_text("def job(ctx):\n    raise ValueError('boom at ' + ctx.job)\n")
    runner, store = make_runner(f"""
        jobs:
          py: {{kind: python, function: "mod_fail:job", cwd: {tmp_path}}}
    """)
    result = runner.execute(RunRequest("py", SLOT))
    assert (result.status, result.error) == ("failed", "ValueError: boom at py")
    assert store.watermark("py") is None


def test_python_job_import_error_is_a_clear_failure(make_runner, tmp_path):
    runner, _ = make_runner("""
        jobs:
          py: {kind: python, function: "no_such_module_xyz:job"}
    """)
    result = runner.execute(RunRequest("py", SLOT))
    assert result.status == "failed"
    assert "No module named 'no_such_module_xyz'" in result.error


def test_missing_executable_is_a_failed_run(make_runner, tmp_path):
    runner, store = make_runner("""
        jobs:
          ghost: {kind: command, command: ["/nonexistent/binary"]}
    """)
    result = runner.execute(RunRequest("ghost", SLOT))
    assert result.status == "failed" and "cannot start /nonexistent/binary" in result.error
    assert store.get_run(result.run_id).status == "failed"


def test_every_output_line_says_its_stream(make_runner, tmp_path, logs):
    (tmp_path / "talky.py").write_text(
        "import sys\n\ndef run(ctx):\n    print('to stdout', flush=True)\n"
        "    print('to stderr', file=sys.stderr, flush=True)\n    ctx.log.info('structured', rows=3)\n")
    runner, _ = make_runner(f"""
        jobs:
          shell: {{kind: command, shell: "echo out; echo err >&2; echo 'more out'"}}
          talky: {{kind: python, function: "talky:run", cwd: "{tmp_path}"}}
    """)
    assert runner.execute(RunRequest("shell", SLOT)).status == "success"
    assert runner.execute(RunRequest("talky", SLOT)).status == "success"
    output = [e for e in logs.events() if e.get("event") == "output"]
    assert all(set(e) >= {"line", "stream", "job", "run_id", "attempt"} and e["level"] == "info" for e in output)
    shell = [(e["stream"], e["line"]) for e in output if e["job"] == "shell"]
    # two pipes: the order within a stream holds, across streams it need not
    assert [x for x in shell if x[0] == "stdout"] == [("stdout", "out"), ("stdout", "more out")]
    assert [x for x in shell if x[0] == "stderr"] == [("stderr", "err")]
    talky = sorted((e["stream"], e["line"]) for e in output if e["job"] == "talky")
    assert talky == [("stderr", "to stderr"), ("stdout", "to stdout")]
    [structured] = [e for e in logs.events() if e.get("event") == "structured"]
    assert structured["rows"] == 3 and "stream" not in structured  # the worker's own events keep their shape


def test_last_lines_of_a_failure_hold_both_streams(make_runner):
    runner, store = make_runner("""
        jobs:
          broken: {kind: command, shell: "echo starting; echo 'no such table' >&2; exit 4"}
    """)
    result = runner.execute(RunRequest("broken", SLOT))
    assert result.status == "failed"
    assert sorted(store.get_run(result.run_id).metrics["last_lines"]) == ["no such table", "starting"]


def test_a_worker_ends_like_an_interpreter_open_files_and_thread_pools_included(make_runner, tmp_path):
    """What a job leaves to the end of its process is done as a normal exit does it: a file object
    it never closed is flushed, and work queued on a ``ThreadPoolExecutor`` it did not wait for
    finishes (``concurrent.futures`` joins its threads at exit)."""
    kept, queued = tmp_path / "kept.txt", tmp_path / "queued.txt"
    (tmp_path / "mod_open.py").write_text(
        "import threading\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"out = open({str(kept)!r}, 'w')  # a module-level handle, never closed\n"
        "pool = ThreadPoolExecutor(max_workers=1)\n"
        "gate = threading.Event()\n"
        "threading._register_atexit(gate.set)  # opens once the interpreter begins to exit\n"
        "def job(ctx):\n"
        "    out.write('kept')\n"
        "    pool.submit(gate.wait)\n"
        f"    pool.submit(lambda: open({str(queued)!r}, 'w').write('queued'))\n"
        "    return {'rows_written': 1}\n")
    runner, store = make_runner(f"""
        jobs:
          py: {{kind: python, function: "mod_open:job", cwd: {tmp_path}, timeout: 60s}}
    """)
    result = runner.execute(RunRequest("py", SLOT))
    assert result.status == "success", result.error
    assert kept.read_text() == "kept"
    assert queued.read_text() == "queued"
