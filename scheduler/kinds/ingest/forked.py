"""The fetch side of an ingest run in a process of its own, and the pipe between the two sides.

In a thread, fetching and reading pages shares the interpreter lock with the transform side, and
every socket read hands the lock back and forth.  A forked child that fetches and reads pages
runs on the other core with a lock of its own; only the finished pages cross, pickled with
protocol 5: the pickle holds the structure and the page's bytes where they cross
(:mod:`~scheduler.kinds.ingest.page_bytes`), and the columns' Arrow buffers travel out of band
after it, written with ``os.writev`` from where they lie when the pipe takes
the message at once, and unpickled as slices of the one buffer the parent reads them into.
See :mod:`~scheduler.kinds.ingest.prefetch` for when it is used.

What must hold:
- The child never outlives the run: it dies with the thread that forked it (``PR_SET_PDEATHSIG``),
  ignores SIGTERM and SIGINT (the run decides how to stop and ends the child itself), and leaves
  with ``os._exit`` after flushing its own output, running none of the parent's exit handlers.
- Memory stays bounded: the child holds at most ``ahead`` pages it could not yet hand over,
  beyond what the pipe itself buffers; ``ahead`` drops from the start-up allowance to the steady
  one once the parent says it consumes (a byte on the control pipe).
- A message is framed as: its pickle's size and the number of out-of-band buffers (:data:`_HEADER`),
  each buffer's size, the pickle, then the buffers, each padded to :data:`_ALIGN` bytes.  The
  parent reads the pickle into a buffer of its own (freed once loaded) and the out-of-band
  buffers into one more, where each starts a multiple of 64 bytes in: 16-byte aligned in memory,
  enough for any Arrow value.
- Every message is ``(kind, payload, pages, bytes_fetched, requests)``.  An error crosses as
  :class:`CrossedError`: the exception itself when it survives pickling, else its type name and
  text, and in both cases the child's traceback, so the parent reports it as a thread-side error
  would be reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pickle
import select
import signal
import struct
import sys
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

_HEADER = struct.Struct("<QI")  # the pickle's size, the number of out-of-band buffers
_SIZE = struct.Struct("<Q")
_ALIGN = 64
_ZEROS = memoryview(bytes(_ALIGN))
_IOV_MAX = 1024  # buffers one writev may take (Linux)
_PIPE_BYTES = 1 << 20  # the pipe's own buffer: a few pages of 1,000 records
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1


@dataclass
class CrossedError:
    """An exception raised in the child, as it reaches the parent."""

    pickled: bytes | None
    type_name: str
    text: str
    child_traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> CrossedError:
        try:
            pickled: bytes | None = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that holds what cannot be pickled
            pickled = None
        return cls(pickled, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))

    def exception(self) -> BaseException:
        """The exception to raise in the parent: the same type and text where it unpickles, else an
        ``Exception`` subclass of the same name; the child's traceback is added as a note."""
        exc: BaseException | None = None
        if self.pickled is not None:
            with contextlib.suppress(Exception):
                exc = pickle.loads(self.pickled)  # noqa: S301 - our own child's bytes
        if not isinstance(exc, BaseException):
            exc = type(self.type_name, (Exception,), {})(self.text)
        exc.add_note("in the fetch process:\n" + self.child_traceback.rstrip())
        return exc


class Outbox:
    """The child's end: sends messages without blocking while fewer than ``ahead`` wait.

    A message the pipe takes at once is written straight from its buffers; one that must wait is
    first joined into one block, so the page it came from (its columns' buffers, its bytes) is
    freed now and only that block is held (holding pages of many buffers fragments the heap)."""

    def __init__(self, fd: int, control: int, ahead: int, steady: int) -> None:
        os.set_blocking(fd, False)
        os.set_blocking(control, False)
        self._fd, self._control, self._ahead, self._steady = fd, control, ahead, steady
        self._pending: deque[list[memoryview]] = deque()  # messages waiting, each joined into one block

    def send(self, message: tuple[Any, ...]) -> None:
        parts = frame(message)
        self._flush(block=False)  # what waits goes first
        if not self._pending:
            self._write_some(parts)
        if parts:
            self._pending.append([memoryview(b"".join(parts))])
        while len(self._pending) > self._ahead:
            self._flush(block=True)

    def close(self) -> None:
        """Send everything still waiting, then close the pipe (the parent reads the end of it)."""
        while self._pending:
            self._flush(block=True)
        os.close(self._fd)

    def _write_some(self, parts: list[memoryview]) -> None:
        """Write what the pipe takes now of ``parts``, dropping it from their front."""
        while parts:
            try:
                written = os.writev(self._fd, parts[:_IOV_MAX])
            except BlockingIOError:
                return
            _advance(parts, written)

    def _flush(self, block: bool) -> None:
        """Write waiting messages while the pipe takes them; ``block``: wait for room until the
        oldest one is handed over, then return (the caller checks again)."""
        if self._ahead != self._steady:
            with contextlib.suppress(BlockingIOError):
                if os.read(self._control, 1):
                    self._ahead = self._steady
        while self._pending:
            parts = self._pending[0]
            self._write_some(parts)
            if parts:  # the pipe is full
                if not block:
                    return
                select.select([], [self._fd], [])
                continue
            self._pending.popleft()
            if block:
                return


def frame(message: tuple[Any, ...]) -> list[memoryview]:
    """``message`` as the parts to write: header, sizes and pickle, then each out-of-band buffer
    (a view of the object that holds it, not a copy) and the padding that aligns the next."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    head = _HEADER.pack(len(data), len(views)) + b"".join(_SIZE.pack(v.nbytes) for v in views)
    parts = [memoryview(head), memoryview(data)]
    for view in views:
        parts += (view, _ZEROS[:_padding(view.nbytes)])
    return parts


def _padding(size: int) -> int:
    return -size % _ALIGN


def _advance(parts: list[memoryview], written: int) -> None:
    """Drop the ``written`` bytes from the front of ``parts``."""
    done = 0
    while done < len(parts) and written >= parts[done].nbytes:
        written -= parts[done].nbytes
        done += 1
    del parts[:done]
    if written:
        parts[0] = parts[0][written:]


class Inbox:
    """The parent's end: reads one message at a time, blocking (without the lock) until it comes."""

    def __init__(self, fd: int) -> None:
        self._file = open(fd, "rb", buffering=0)  # noqa: SIM115 - closed by close()

    def get(self) -> tuple[Any, ...]:
        """The next message; EOFError when the child closed its end or ended.  Its out-of-band
        buffers are slices of one bytearray (what holds a column holds that buffer, not the
        pickle and any page bytes in it)."""
        size, count = _HEADER.unpack(self._read(_HEADER.size))
        sizes = [n for (n,) in _SIZE.iter_unpack(self._read(_SIZE.size * count))] if count else []
        data = self._read(size)
        body = memoryview(self._read(sum(n + _padding(n) for n in sizes)))
        buffers, start = [], 0
        for n in sizes:
            buffers.append(body[start:start + n])
            start += n + _padding(n)
        message: tuple[Any, ...] = pickle.loads(data, buffers=buffers)  # noqa: S301 - our own child's bytes
        return message

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            got = self._file.readinto(view[done:])
            if not got:
                raise EOFError("the fetch process ended before the run's end")
            done += got
        return buffer

    def close(self) -> None:
        self._file.close()


@dataclass
class Child:
    """A forked fetch process, seen from the parent."""

    pid: int
    inbox: Inbox
    control: int
    status: int | None = None

    def consuming(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.control, b"c")

    def end(self) -> None:
        """Reap the child, killing it first if it still runs; close the pipes.  Idempotent."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # one that has exited (unreaped) keeps its own status
            self._reap()

    def exit_reason(self) -> str:
        """How the child ended, for an error when its pipe closed early (reaps it)."""
        if self.status is None:
            self._reap()
        assert self.status is not None
        if os.WIFSIGNALED(self.status):
            return f"killed by {signal.Signals(os.WTERMSIG(self.status)).name}"
        return f"exit status {os.WEXITSTATUS(self.status)}"

    def _reap(self) -> None:
        try:
            _, self.status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored by an embedding process)
            self.status = 0
        finally:
            self._close_pipes()

    def _close_pipes(self) -> None:
        self.inbox.close()
        with contextlib.suppress(OSError):
            os.close(self.control)


def fork(work: Callable[[Outbox], None], ahead: int, steady: int) -> Child:
    """Fork a child that runs ``work(outbox)`` and leaves; the parent gets the child's handle.

    Call it from the thread that lives as long as the run: the child dies when that thread ends."""
    _flush_stdio()  # nothing buffered now may be written twice
    read, write = os.pipe()
    control_read, control_write = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(write, _F_SETPIPE_SZ, _PIPE_BYTES)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read)
        os.close(control_write)
        _child(work, Outbox(write, control_read, ahead, steady), parent)
    os.close(write)
    os.close(control_read)
    return Child(pid, Inbox(read), control_write)


def _child(work: Callable[[Outbox], None], outbox: Outbox, parent: int) -> NoReturn:  # pragma: no cover
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent)
        work(outbox)
        outbox.close()
    except BaseException:  # noqa: BLE001 - the parent reads the pipe's early end and says so
        code = 1
    finally:
        _flush_stdio()
        os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)
