"""A quick exit still does what a normal one does: threads finish, atexit runs, output is flushed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading
    from scheduler.leaving import leave

    go = threading.Event()
    threading.Thread(target=lambda: (go.wait(), sys.stdout.write("thread;"))).start()
    atexit.register(lambda: sys.stdout.write("atexit;"))
    sys.stdout.write("main;")  # a pipe: block-buffered, so only the flush shows it
    sys.stderr.write("err;")
    go.set()
    leave(int(sys.argv[1]))
    sys.stdout.write("never;")
""")


@pytest.mark.parametrize(("code", "status"), [(0, 0), (3, 3), (130, 130), (256 + 7, 7), (-1, 1)])
def test_leave_joins_threads_runs_atexit_flushes_and_exits_with_the_code(code: int, status: int) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == status
    assert proc.stdout == "main;thread;atexit;" and proc.stderr == "err;"


def _leave_with(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=60)


def test_a_thread_pool_left_running_finishes_its_work_and_does_not_hang_the_exit() -> None:
    """``concurrent.futures`` stops its (non-daemon) threads from threading's exit hooks, as a
    normal exit runs them: its queued work is done and the threads end, so joining them returns."""
    proc = _leave_with("""
        import sys, threading
        from concurrent.futures import ThreadPoolExecutor
        from scheduler.leaving import leave

        pool = ThreadPoolExecutor(max_workers=1)
        gate = threading.Event()
        threading._register_atexit(gate.set)  # opens when the exit begins: the next item is still queued
        pool.submit(gate.wait)
        pool.submit(sys.stdout.write, "queued;")
        leave(0)
    """)
    assert proc.returncode == 0 and proc.stdout == "queued;", proc.stderr


def test_a_file_left_open_is_flushed(tmp_path: Path) -> None:
    text, binary = tmp_path / "text.txt", tmp_path / "binary.bin"
    proc = _leave_with("""
        import sys
        from scheduler.leaving import leave

        text = open(sys.argv[1], "w")  # never closed: a normal exit flushes both at teardown
        binary = open(sys.argv[2], "wb")
        text.write("text")
        binary.write(b"binary")
        leave(0)
    """, str(text), str(binary))
    assert proc.returncode == 0, proc.stderr
    assert text.read_text() == "text" and binary.read_bytes() == b"binary"


def test_a_forked_child_never_writes_what_its_parent_buffered(tmp_path: Path) -> None:
    """The parent's file objects are the parent's: a child that closed their descriptors (and got
    the same numbers back for its own files) must not flush the parent's buffers into them."""
    mine, theirs = tmp_path / "parent.txt", tmp_path / "child.txt"
    proc = _leave_with("""
        import os, sys
        from scheduler.leaving import inherit_files, leave

        parent = open(sys.argv[1], "w")
        parent.write("parent")  # buffered in the parent when it forks
        pid = os.fork()
        if pid == 0:
            os.close(parent.fileno())
            inherit_files()
            child = open(sys.argv[2], "w")  # the lowest free descriptor: the parent file's number
            assert child.fileno() == parent.fileno()
            child.write("child")
            leave(0)
        _, status = os.waitpid(pid, 0)
        parent.close()
        leave(os.waitstatus_to_exitcode(status))
    """, str(mine), str(theirs))
    assert proc.returncode == 0, proc.stderr
    assert mine.read_text() == "parent" and theirs.read_text() == "child"


def test_a_named_temporary_file_left_open_is_deleted(tmp_path: Path) -> None:
    """As its finaliser does at a normal exit."""
    proc = _leave_with("""
        import sys, tempfile
        from scheduler.leaving import leave

        kept = tempfile.NamedTemporaryFile("w", dir=sys.argv[1], delete=False)
        kept.write("kept")
        scratch = tempfile.NamedTemporaryFile(dir=sys.argv[1])
        leave(0)
    """, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [p.read_text() for p in tmp_path.iterdir()] == ["kept"]
