"""SIGTERM as an exception, deferred around work that must finish: real signals, real processes.

In-process tests raise SIGTERM in pytest's main thread (``signal.raise_signal``, so the handler
runs before the call returns); every test leaves the handler and the signal mask as it found them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.stopping import Stopped, raise_on_sigterm, settle, sigterm_deferred, sigterm_raises

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    handler = signal.getsignal(signal.SIGTERM)
    yield
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # drop one left pending, if any
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, handler)


def test_sigterm_raises_stopped_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as info, sigterm_raises() as installed:
        assert installed
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("SIGTERM did not raise")
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_once_ignores_a_repeat_while_the_first_is_handled() -> None:
    handled = []
    with sigterm_raises(once=True):
        try:
            signal.raise_signal(signal.SIGTERM)
        except Stopped:
            signal.raise_signal(signal.SIGTERM)  # a repeat while cleaning up: ignored
            handled.append("cleanup finished")
    assert handled == ["cleanup finished"]


def test_without_once_every_sigterm_raises() -> None:
    with sigterm_raises():
        for _ in range(2):
            with pytest.raises(Stopped):
                signal.raise_signal(signal.SIGTERM)


def test_off_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def probe() -> None:
        with sigterm_raises() as installed:
            seen.append(installed)
        seen.append(raise_on_sigterm())
        with sigterm_deferred() as held:
            seen.append(held.active)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(30)
    assert seen == [False, False, False]
    assert signal.getsignal(signal.SIGTERM) is before


def test_deferred_sigterm_is_recorded_then_discarded_by_settle() -> None:
    raise_on_sigterm()
    done = []
    with sigterm_deferred() as held:
        assert held.active and not held.received
        signal.raise_signal(signal.SIGTERM)  # blocked in this thread: pending, not raised
        done.append("published")
    assert held.received
    signal.raise_signal(signal.SIGTERM)  # after the block, before the result is written: still deferred
    done.append("result written")
    settle()  # ignores SIGTERM, then unblocks: the pending one is dropped
    assert done == ["published", "result written"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert signal.SIGTERM not in signal.sigpending()


def test_nested_block_restores_the_outer_handler_and_settle_is_kept() -> None:
    raise_on_sigterm()
    outer = signal.getsignal(signal.SIGTERM)
    with sigterm_raises(once=True):
        assert signal.getsignal(signal.SIGTERM) is not outer
    assert signal.getsignal(signal.SIGTERM) is outer
    with sigterm_raises():
        settle()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # not overwritten on leaving the block


def test_nothing_to_defer_under_the_default_action() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with sigterm_deferred() as held:
        assert not held.active and not held.received
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


CHILD = """
import sys, time
from pathlib import Path
from scheduler.stopping import Stopped, raise_on_sigterm, settle, sigterm_deferred

ready, mode = Path(sys.argv[1]), sys.argv[2]
raise_on_sigterm()
try:
    if mode == "deferred":
        with sigterm_deferred() as held:
            ready.write_text("in the critical section")
            deadline = time.monotonic() + 30
            while not held.received and time.monotonic() < deadline:
                time.sleep(0.01)
        print("section finished, signal received:", held.received, flush=True)
        settle()
        sys.exit(0)
    ready.write_text("waiting")
    time.sleep(60)
    print("not stopped", flush=True)
except Stopped as exc:
    print("stopped by", exc.signum, flush=True)
    sys.exit(128 + exc.signum)
"""


def _run_child(tmp_path: Path, mode: str) -> tuple[int, str]:
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ready), mode], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert child.poll() is None, child.stdout.read() if child.stdout else ""
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, out


def test_a_real_process_is_stopped_by_sigterm(tmp_path: Path) -> None:
    code, out = _run_child(tmp_path, "sleep")
    assert code == 128 + signal.SIGTERM, out
    assert out.strip() == f"stopped by {int(signal.SIGTERM)}"


def test_a_real_process_finishes_its_critical_section(tmp_path: Path) -> None:
    code, out = _run_child(tmp_path, "deferred")
    assert code == 0, out
    assert out.strip() == "section finished, signal received: True"
