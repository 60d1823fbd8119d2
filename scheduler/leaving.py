"""Leaving a process as the interpreter would, without its module teardown.

A process that imported pandas, pyarrow or pydantic spends 0.1-0.3 s tearing those modules down
at exit (freeing every object one by one), memory the end of the process returns anyway.
:func:`leave` does what matters of a normal exit and then ``os._exit``: non-daemon threads are
joined, ``atexit`` handlers run (logging's flush among them), stdout and stderr are flushed.
What it skips is what relies on finalisation alone: a file object left open and unflushed
loses its buffer (ours are closed by ``with``), and ``__del__`` methods of objects still alive
do not run.  Standard library only: the fork server's children use it too.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def leave(code: int) -> NoReturn:
    """End the process with exit status ``code`` (its low byte; a negative code reads as 1)."""
    try:
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:  # noqa: BLE001 - a closed or broken stream: nothing more to say
                pass
    finally:
        os._exit(code & 0xFF if code >= 0 else 1)
