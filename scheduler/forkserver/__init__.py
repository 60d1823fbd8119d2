"""A fork server for worker runs: one interpreter that imported the kinds once, forked per run.

Starting ``python -m scheduler.worker`` costs ~0.4 CPU-seconds per run (the interpreter, pydantic
and the kinds' modules).  The daemon instead asks a long-lived helper, started on the first worker
run, to ``fork()`` a fresh child for each run.  What must hold:

* **Lazy, owned, restarted.**  :class:`~scheduler.forkserver.client.ForkServer` (daemon side)
  starts ``python -m scheduler.forkserver.server`` on the first in-process run, registers it in
  the daemon's :class:`~scheduler.process.ChildTable` (so the orphan reaper never takes its exit
  status) and stops it at shutdown.  If the server dies, the client notices (EOF on the control
  socket), SIGKILLs the process groups of the runs it had started, finishes each with a one-line
  reason (``the fork server died ...``) so the runner records them ``failed``, and starts a new
  server for the next run.  Where ``fork``, ``SOCK_SEQPACKET`` or fd passing is missing, when
  ``SCHEDULER_FORKSERVER=0``, or while a server that failed to start is backing off, runs use a
  fresh interpreter as before.
* **Preload without threads.**  The server imports what the kinds need (``scheduler.worker``,
  the spec models with pydantic, the kinds' executors and their light dependencies) and nothing
  that starts a thread.  pandas/pyarrow/numpy are not preloaded by default: importing numpy
  starts an OpenBLAS thread pool and pyarrow a jemalloc background thread, and neither may cross
  a fork.  ``SCHEDULER_FORKSERVER_PRELOAD=pandas,pyarrow,pyarrow.parquet`` preloads them with
  those pools switched off before the libraries load (``OPENBLAS_NUM_THREADS=1``,
  ``JE_ARROW_MALLOC_CONF=background_thread:false``, unless set), so ingest runs skip ~0.4 s of
  imports; their children then keep single-threaded BLAS, hence opt-in.  A server that has more
  than one thread after preloading counts as not started (fresh interpreters, retried later).
  Before every fork the server checks it is single-threaded (``threading.active_count() == 1``
  and one entry in ``/proc/self/task``); otherwise it refuses, the run falls back to a fresh
  interpreter and the client replaces the server.  ``gc.freeze()`` after preloading keeps the
  children from copying the preloaded objects' pages.
* **Each child is a fresh run.**  It calls ``os.setsid()`` (its own session and process group,
  pgid == pid) *before* the server reports its pid, so the runner's ``killpg`` (timeout, stop,
  ``replace``) always reaches it and its descendants.  Its stdin, stdout and stderr are pipes the
  daemon created and passed over the socket (``SCM_RIGHTS``): the runner feeds the payload and
  relays each stream's lines exactly as with a subprocess.  The child applies the run's environment
  (``os.environ`` replaced, so ``putenv`` reaches C code and subprocesses), cwd and
  ``PYTHONPATH`` (``sys.path`` rebuilt as a fresh ``python -m`` would build it), closes every
  other descriptor, runs the worker and leaves with ``os._exit``
  (:func:`scheduler.leaving.leave`), so its memory returns to the system when the run ends and
  nothing it imported or set is seen by the next run (each child is forked from the unchanged
  server).  Interpreter start-up settings (hash seed, ``PYTHON*``
  variables other than ``PYTHONPATH``) are the server's.
* **Exit statuses.**  Job processes are the server's children, not the daemon's: the server
  reaps them (``waitpid(-1)`` is correct there: every child of the server is a run) and reports
  ``{"pid", "returncode"}``, with ``returncode`` as ``subprocess`` gives it (negative for a
  signal).  The daemon's ChildTable invariant is unchanged: it only ever waits for its own
  children (now including the server); runs orphaned by a dead server are reparented to the
  daemon (PID 1 or subreaper) and reaped by its orphan reaper.
* **Isolation from the daemon.**  A crash in a job (even a segfault) ends only its child; a crash
  of the server ends only the runs it had started.  The client side imports only the standard
  library, so the daemon still imports no pydantic, pandas or pyarrow.
* **Bounded server.**  The server does no work itself: it holds its preloaded modules, a socket
  and a table of live children, so its RSS stays flat however many runs it forks.
* ``run-job`` (one run in the foreground) keeps the plain subprocess path: starting a server
  costs as much as the one run it would serve.
"""

from __future__ import annotations

from scheduler.forkserver.client import ForkedProcess, ForkServer, fork_supported

__all__ = ["ForkServer", "ForkedProcess", "fork_supported"]
