"""Leaving a process as the interpreter would, without its module teardown.

A process that imported pandas, pyarrow or pydantic spends 0.1-0.3 s tearing those modules down
at exit (freeing every object one by one), memory the end of the process returns anyway.
:func:`leave` does what matters of a normal exit and then ``os._exit``, in the interpreter's
order: ``threading``'s own exit hooks run and non-daemon threads are joined
(``threading._shutdown``, as ``Py_FinalizeEx`` calls it: ``concurrent.futures`` executors finish
their queued work and stop their threads there), ``atexit`` handlers run (logging's flush among
them), every file object still open is flushed (a job's module-level handle, which a normal exit
flushes while tearing its module down), then stdout and stderr.

What must hold: nothing written to a file object of this process is lost, and a thread pool
left running never makes the process hang.  What it skips is what relies on finalisation
alone: ``__del__`` methods of objects still alive do not run (a ``GzipFile`` left open gets no
trailer); a ``NamedTemporaryFile`` left open is closed, so deleted, as its finaliser would.
A forked child marks what it inherited (:func:`inherit_files`): the parent's file objects and
their buffers are the parent's, and their descriptors may be closed or reused in the child.
Finding the open files scans the live objects: 20-35 ms in a worker that imported pandas and
pyarrow, of the 0.1-0.3 s saved.  Standard library only: the fork server's children use it too.
"""

from __future__ import annotations

import atexit
import gc
import io
import os
import sys
import threading
import weakref
from typing import Any, NoReturn

# the buffered file objects ``open`` makes (text first: flushing one fills its binary buffer)
_FILES = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)
_inherited: weakref.WeakSet[Any] = weakref.WeakSet()


def _open_files() -> list[Any]:
    """This process's file objects still alive, named temporary files first (closing one deletes
    it, as its finaliser would), then text files (flushing one fills its binary buffer); a frozen
    generation - the fork server's preloaded objects - is not scanned."""
    kinds: set[type] = set(_FILES)
    tempfile = sys.modules.get("tempfile")
    temporary = getattr(tempfile, "_TemporaryFileWrapper", None)
    if isinstance(temporary, type):
        kinds.add(temporary)
    found = [obj for obj in gc.get_objects() if type(obj) in kinds]
    found.sort(key=lambda obj: (type(obj) is not temporary, type(obj) is not io.TextIOWrapper))
    return found


def inherit_files() -> None:
    """Mark the file objects alive now as the parent's: :func:`leave` will not flush them (a forked
    child calls this before it opens any of its own)."""
    _inherited.update(_open_files())


def _flush_files() -> None:
    for obj in _open_files():
        if obj in _inherited:
            continue
        try:
            if obj.closed:
                continue
            if type(obj) in _FILES:
                obj.flush()
            else:  # a named temporary file: closing it deletes it
                obj.close()
        except BaseException:  # noqa: BLE001 - a closed descriptor or a full disk: as a normal exit, go on
            pass


def _join_threads() -> None:
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None and threading.current_thread() is threading.main_thread():
        shutdown()  # threading's exit hooks (executors), then every non-daemon thread joined
        return
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()


def leave(code: int) -> NoReturn:
    """End the process with exit status ``code`` (its low byte; a negative code reads as 1)."""
    try:
        _join_threads()
        atexit._run_exitfuncs()
        _flush_files()
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:  # noqa: BLE001 - a closed or broken stream: nothing more to say
                pass
    finally:
        os._exit(code & 0xFF if code >= 0 else 1)
