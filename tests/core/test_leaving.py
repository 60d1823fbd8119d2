"""A quick exit still does what a normal one does: threads finish, atexit runs, output is flushed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
