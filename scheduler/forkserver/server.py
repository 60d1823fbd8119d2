"""``python -m scheduler.forkserver.server FD``: preload the kinds, then fork one child per run.

The control channel is the ``SOCK_SEQPACKET`` socket inherited as descriptor ``FD``; every
message is one JSON object (see :mod:`scheduler.forkserver.client` for the daemon's side):

* server -> daemon, once: ``{"op": "ready", "pid": P, "preloaded": [...], "failed": [...]}``;
* daemon -> server: ``{"op": "spawn", "id": N, "env": {...}, "cwd": "..."}`` carrying three
  descriptors (``SCM_RIGHTS``): the read end of the run's stdin pipe and the write ends of its
  stdout and stderr pipes;
* server -> daemon: ``{"op": "started", "id": N, "pid": P}`` once the child is a session leader,
  or ``{"op": "refused", "id": N, "error": "..."}``;
* server -> daemon: ``{"op": "exited", "pid": P, "returncode": R}`` when a child ends.

The server is single-threaded by construction: one ``select`` loop over the control socket and
the SIGCHLD wake-up pipe.  It exits when the daemon closes the socket (its children, each in its
own session, are the daemon's to stop, as with subprocesses).
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any

from scheduler.leaving import inherit_files, leave

MAX_MESSAGE = 1 << 20  # a spawn request carries the run's environment; a megabyte is plenty
WORKER_MODULE = "scheduler.worker"

# Imported once here so no run pays for them; each must start no thread (checked before forks).
BASE_PRELOAD = (
    "scheduler.worker",
    "scheduler.kinds",
    "scheduler.kinds.base",
    "scheduler.config.jobs",
    "scheduler.logs",
)


# Read by native libraries when they load, so set before an opt-in heavy preload: OpenBLAS (numpy)
# and OpenMP start no thread pool, pyarrow's jemalloc no background thread.  Children inherit the
# libraries in that state (single-threaded BLAS), which is why heavy preloading is opt-in.
NO_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "JE_ARROW_MALLOC_CONF": "background_thread:false"}


def extra_preload() -> list[str]:
    """Modules named in ``SCHEDULER_FORKSERVER_PRELOAD`` (comma-separated, e.g. ``pandas,pyarrow``)."""
    return [m.strip() for m in os.environ.get("SCHEDULER_FORKSERVER_PRELOAD", "").split(",") if m.strip()]


def preload_modules() -> list[str]:
    """The modules to import: the worker, every in-process kind's spec model and executor, then
    the opt-in extra ones."""
    names = list(BASE_PRELOAD)
    try:
        from scheduler.kinds.registry import current

        for kind in current():
            if kind.executor is not None:  # a kind that runs in the worker
                names += [kind.spec.partition(":")[0], kind.executor.partition(":")[0]]
    except Exception:  # noqa: BLE001 - a broken registry only costs the preload
        pass
    return list(dict.fromkeys(names + extra_preload()))


def thread_count() -> int:
    """OS threads of this process (``/proc/self/task``), which sees threads Python did not start."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def single_threaded() -> bool:
    return threading.active_count() == 1 and thread_count() == 1


class Server:
    """The fork loop.  Holds no state about runs beyond the pids it must report."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.base_path = _base_sys_path()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.children: set[int] = set()
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            self.closed = True  # the daemon is gone; the loop ends

    def serve(self) -> int:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # the wake-up byte is the point
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self.wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj is self.sock:
                    if not self.receive():
                        return 0
                else:
                    _drain(self.wake_r)
            self.reap()
            if self.closed:
                return 0

    def receive(self) -> bool:
        """Handle one request; False once the daemon has closed the socket."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 8)
        except (ConnectionError, OSError):
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            request = json.loads(data)
            if request.get("op") != "spawn" or len(fds) != 3:
                raise ValueError(f"unexpected request {request.get('op')!r} with {len(fds)} descriptors")
            self.spawn(request, fds[0], fds[1], fds[2])
        except Exception as exc:  # noqa: BLE001 - a bad request must not end the server
            self.send({"op": "refused", "id": _id_of(data), "error": f"{type(exc).__name__}: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def spawn(self, request: dict[str, Any], stdin_fd: int, out_fd: int, err_fd: int) -> None:
        if not single_threaded():
            raise RuntimeError(f"the fork server has {thread_count()} threads; it forks only when single-threaded")
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into this loop
            os.close(ready_r)
            _child(request, (stdin_fd, out_fd, err_fd), ready_w, self.base_path)
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF once the child is a session leader (or died trying)
        os.close(ready_r)
        self.children.add(pid)
        self.send({"op": "started", "id": request["id"], "pid": pid})

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exited", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def _child(request: dict[str, Any], stdio: tuple[int, int, int], ready_w: int, base_path: list[str]) -> None:
    """Become the run: own session, the run's stdio, environment, cwd and sys.path; then the worker."""
    code = 70  # EX_SOFTWARE: set-up failed before the worker ran
    try:
        os.setsid()
        os.close(ready_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, _max_fd())
        inherit_files()  # the server's file objects: their buffers and descriptors are not the run's
        _fresh_stdio()
        env = {str(k): str(v) for k, v in request["env"].items()}
        os.environ.clear()
        os.environ.update(env)
        cwd = request.get("cwd")
        if cwd:
            os.chdir(cwd)
        pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *pythonpath, *(p for p in base_path if p not in pythonpath)]
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        worker = importlib.import_module(WORKER_MODULE)
        sys.argv = [getattr(worker, "__file__", WORKER_MODULE)]
        code = int(worker.main())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and exit; never fall back into the server loop
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        code = 1 if code == 70 else code
    finally:
        leave(code)


def _fresh_stdio() -> None:
    """New ``sys.std*`` objects on fds 0-2, so nothing buffered in the server leaks into a run."""
    encoding = sys.stdout.encoding if sys.stdout else "utf-8"
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding=encoding)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "wb", closefd=False)), encoding=encoding,
                                  line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "wb", closefd=False)), encoding=encoding,
                                  errors="backslashreplace", line_buffering=True)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def _base_sys_path() -> list[str]:
    """``sys.path`` without what a run replaces: the script directory and ``PYTHONPATH`` entries."""
    own = {os.getcwd(), "", *os.environ.get("PYTHONPATH", "").split(os.pathsep)}
    return [p for p in sys.path[1:] if p not in own]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _id_of(data: bytes) -> Any:
    try:
        return json.loads(data).get("id")
    except (ValueError, AttributeError):
        return None


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when this process ends
    preloaded, failed = [], []
    if extra_preload():
        for key, value in NO_THREAD_ENV.items():
            os.environ.setdefault(key, value)
    for name in preload_modules():
        try:
            importlib.import_module(name)
            preloaded.append(name)
        except Exception as exc:  # noqa: BLE001 - the child imports it again and reports the error
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    from scheduler.logs import structlog

    structlog()  # every run logs: imported here once (scheduler.logs imports it only on first use)
    preloaded.append("structlog")
    gc.collect()
    gc.freeze()  # preloaded objects stay out of the children's collections: fewer copied pages
    server = Server(sock)
    server.send({"op": "ready", "pid": os.getpid(), "preloaded": preloaded, "failed": failed,
                 "threads": thread_count()})
    return server.serve()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
