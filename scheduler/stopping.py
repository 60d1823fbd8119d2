"""SIGTERM in a run's process: an exception in the main thread, deferred around work that must finish.

The runner stops an attempt (timeout, shutdown, ``concurrency: replace``) by signalling its
process group with SIGTERM.  In a worker process that signal becomes :class:`Stopped`, raised
wherever the main thread is, so ``finally`` blocks and the kinds' own cleanup (stopping a
container) run.  Three tools, one mechanism:

* :func:`raise_on_sigterm` (for the rest of the process) and :func:`sigterm_raises` (for a
  block) - SIGTERM raises :class:`Stopped` in the main thread; the block form can ignore
  SIGTERMs after the first (``once=True``), so cleanup is not itself interrupted.
* :func:`sigterm_deferred` - from entering it on, SIGTERM is recorded (``Deferral.received``)
  instead of raised, until :func:`settle`: work past this point (publishing) completes and is
  recorded as done.
* :func:`settle` - the result is written; from here SIGTERM changes nothing and a deferred one is
  discarded.

Invariants: handlers are only installed from the main thread (elsewhere these are no-ops and say
so); a handler is only restored if the one installed here is still in place, so nesting and an
intervening :func:`settle` compose.  :class:`Stopped` is a ``BaseException`` so no library's
``except Exception`` between the handler and a blocking call can swallow it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM (a job's own ``sys.exit`` stays a SystemExit)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(installed: Any, previous: Any) -> None:
    """Put ``previous`` back unless something else replaced ``installed`` meanwhile."""
    if signal.getsignal(signal.SIGTERM) is installed:
        signal.signal(signal.SIGTERM, previous)


def _raiser(once: bool) -> Callable[[int, FrameType | None], None]:
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if once and fired:
            return
        fired = True
        raise Stopped(signum)

    return handler


def raise_on_sigterm() -> bool:
    """From now on SIGTERM raises :class:`Stopped` in the main thread (a worker process calls this
    first); False, and nothing changed, outside the main thread."""
    if not _in_main_thread():
        return False
    signal.signal(signal.SIGTERM, _raiser(once=False))
    return True


@contextmanager
def sigterm_raises(*, once: bool = False) -> Iterator[bool]:
    """While inside, SIGTERM raises :class:`Stopped` in the main thread; yields whether it could.

    With ``once``, SIGTERMs after the first are ignored until the block ends, so the handling of
    the first (stopping a container) is not aborted by a repeat.  Outside the main thread no
    handler can be set and this yields False: the runner's SIGKILL stays the safety net.
    """
    if not _in_main_thread():
        yield False
        return
    handler = _raiser(once)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield True
    finally:
        _restore(handler, previous)


class Deferral:
    """What :func:`sigterm_deferred` holds: whether a SIGTERM arrived since it began."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self._received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self._received = True

    @property
    def received(self) -> bool:
        """True once a SIGTERM was caught here or is waiting, blocked, for :func:`settle`."""
        return self._received or (self.active and signal.SIGTERM in signal.sigpending())


@contextmanager
def sigterm_deferred() -> Iterator[Deferral]:
    """From here until :func:`settle`, SIGTERM is recorded, never raised; yields the :class:`Deferral`.

    For work that, once begun, must finish and be recorded as finished: a SIGTERM landing between
    two renames of a publish, or after publishing but before the result is written, would record a
    failed run over published data (and an ``append`` rerun would then duplicate rows).  The block
    marks where that work begins; leaving it does not end the deferral, since the result is written
    later, by the caller's caller: :func:`settle` does (and discards the signal).

    Active only in the main thread and when a Python-level SIGTERM handler is installed (as the
    worker's :func:`raise_on_sigterm` does); with the default action there is nothing to defer.  It
    both blocks SIGTERM in this thread and replaces the handler with the recorder, because CPython
    runs handlers in the main thread even when the kernel delivered the signal to another thread
    (Arrow's pool, a fetch thread), so blocking alone would not be enough.
    """
    if not _in_main_thread() or not callable(signal.getsignal(signal.SIGTERM)):
        yield Deferral(active=False)
        return
    deferral = Deferral(active=True)
    signal.signal(signal.SIGTERM, deferral)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    yield deferral


def settle() -> None:
    """From here on a SIGTERM changes nothing: ignore it, including one that arrived while a
    deferral blocked it, so finished work is recorded as such.  Main thread only."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
