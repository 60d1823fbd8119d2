"""The daemon's side of the fork server: start it lazily, ask it for runs, learn how they ended.

:meth:`ForkServer.spawn` returns a :class:`ForkedProcess`, which reads like the
``subprocess.Popen`` the runner otherwise gets (``pid``, ``stdin``, ``stdout``, ``stderr``,
``wait()``, ``returncode``), or ``None`` when the fork server cannot serve (the caller then starts a fresh
interpreter).  One reader thread per live server turns its messages into results; the spawning
threads only send and wait.

Invariants:
* a :class:`ForkedProcess` gets its pid only once the child leads its own session, and ends
  exactly once: with the returncode the server reported, or with ``lost`` set (the server died;
  the run's process group has been SIGKILLed);
* at most one server is alive per :class:`ForkServer`; it is registered in the daemon's
  :class:`~scheduler.process.ChildTable` for as long as we own its exit status.

Only the standard library is imported here: this module lives in the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from scheduler import clock
from scheduler.logs import get_logger
from scheduler.process import ChildTable, signal_group

READY_TIMEOUT = 60.0  # the preload imports pydantic and the kinds: seconds on a busy host
REPLY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
RETRY_AFTER = 30.0  # after a server failed to start, fresh interpreters for this long
MAX_MESSAGE = 1 << 16


def fork_supported() -> bool:
    """Whether this platform can run a fork server (fork, SEQPACKET sockets, fd passing)."""
    return (hasattr(os, "fork") and hasattr(socket, "SOCK_SEQPACKET") and hasattr(socket, "send_fds")
            and os.environ.get("SCHEDULER_FORKSERVER", "1").strip().lower() not in ("0", "false", "no", "off"))


class ForkedProcess:
    """One run forked by the server, read like ``subprocess.Popen`` by the runner."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid: int = 0
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None
        self.lost: str | None = None  # why the run ended without a reported status
        self.args = [sys.executable, "-m", "scheduler.worker"]
        self._ended = threading.Event()

    def _finish(self, returncode: int, lost: str | None = None) -> None:
        if not self._ended.is_set():
            self.lost = lost
            self.returncode = returncode
            self._ended.set()

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode


class _Pending:
    def __init__(self, proc: ForkedProcess) -> None:
        self.proc = proc
        self.error: str | None = None
        self.done = threading.Event()


class _Server:
    """One live server process and its control socket."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.popen = popen
        self.sock = sock
        self.pending: dict[int, _Pending] = {}
        self.running: dict[int, ForkedProcess] = {}
        self.closing = False
        self.dead = threading.Event()


class ForkServer:
    """Owns the fork server process for one daemon: started on first use, restarted after a death."""

    def __init__(self, children: ChildTable, enabled: bool | None = None) -> None:
        self.children = children
        self.enabled = fork_supported() if enabled is None else enabled
        self.log = get_logger(component="forkserver")
        self._lock = threading.Lock()  # guards _server, _next_id and the tables of the live server
        self._send_lock = threading.Lock()
        self._start_lock = threading.Lock()  # one start at a time; runs wait for it, not for each other
        self._server: _Server | None = None
        self._next_id = 0
        self._retry_at = 0.0
        self.starts = 0

    @property
    def pid(self) -> int | None:
        server = self._server
        return server.popen.pid if server is not None and not server.dead.is_set() else None

    # --- runs --------------------------------------------------------------------------------
    def spawn(self, env: Mapping[str, str], cwd: str | None) -> ForkedProcess | None:
        """Fork a worker run; None if the fork server cannot serve it (use a fresh interpreter).

        Raises OSError when the server died while starting the run: it may have forked, so the
        run must not be started again elsewhere."""
        if not self.enabled or clock.monotonic() < self._retry_at:
            return None
        server = self._ensure()
        if server is None:
            return None
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc = ForkedProcess(os.fdopen(stdin_w, "wb"), os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))
        pending = _Pending(proc)
        message: dict[str, Any] = {"op": "spawn", "env": dict(env), "cwd": cwd or os.getcwd()}
        with self._lock:
            if server.dead.is_set():  # died since _ensure: its reader will answer nobody now
                self._close_pipes(proc)
                for fd in (stdin_r, out_w, err_w):
                    os.close(fd)
                return None
            self._next_id += 1
            message["id"] = self._next_id
            server.pending[self._next_id] = pending
        try:
            with self._send_lock:  # not under _lock: the reader thread must keep draining replies
                socket.send_fds(server.sock, [json.dumps(message).encode()], [stdin_r, out_w, err_w])
        except OSError as exc:
            with self._lock:
                server.pending.pop(message.get("id", 0), None)
            self._close_pipes(proc)
            self._kill(server, f"cannot reach the fork server: {exc}")
            return None  # nothing was forked: a fresh interpreter may run it
        finally:
            for fd in (stdin_r, out_w, err_w):  # the server holds its copies now (or there is no run)
                os.close(fd)
        if not pending.done.wait(REPLY_TIMEOUT):
            self._kill(server, f"the fork server did not answer within {REPLY_TIMEOUT:.0f}s")
            pending.done.wait(STOP_TIMEOUT)
        if pending.error is not None or not proc.pid:
            self._close_pipes(proc)
            error = pending.error or "no answer from the fork server"
            if server.dead.is_set():
                raise OSError(error)
            self.log.warning("fork server refused a run; using a fresh interpreter", error=error)
            self._kill(server, f"refused a run: {error}")
            return None
        return proc

    @staticmethod
    def _close_pipes(proc: ForkedProcess) -> None:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # --- the server's lifecycle ----------------------------------------------------------------
    def _ensure(self) -> _Server | None:
        server = self._server
        if server is not None and not server.dead.is_set():
            return server
        with self._start_lock:
            server = self._server
            if server is not None and not server.dead.is_set():
                return server
            try:
                server = self._start()
            except (OSError, ValueError) as exc:
                self._retry_at = clock.monotonic() + RETRY_AFTER
                self.log.error("fork server did not start; runs use fresh interpreters for now",
                               error=str(exc), retry_in=RETRY_AFTER)
                return None
            self._server = server
            return server

    def _start(self) -> _Server:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Its own session: a terminal's Ctrl-C or a signal to the daemon's group never reaches it.
            popen = self.children.start(
                [sys.executable, "-m", "scheduler.forkserver.server", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=[theirs.fileno()],
                start_new_session=True, close_fds=True,
            )
        finally:
            theirs.close()
        server = _Server(popen, ours)
        ours.settimeout(READY_TIMEOUT)
        try:
            ready = json.loads(ours.recv(MAX_MESSAGE) or b"{}")
        except (OSError, ValueError) as exc:
            ready = {"error": str(exc)}
        ours.settimeout(None)
        if ready.get("op") != "ready":
            self._reap(server)
            raise OSError(f"no ready message ({ready.get('error') or 'the server exited'})")
        if ready.get("threads") != 1:  # a preloaded module started a thread: forking is unsafe
            self._reap(server)
            raise OSError(f"the fork server has {ready.get('threads')} threads after preloading "
                          f"{', '.join(ready.get('preloaded', ()))}; it must have one")
        self.starts += 1
        self.log.info("fork server started", pid=popen.pid, preloaded=len(ready.get("preloaded", ())),
                      threads=ready.get("threads"))
        for failure in ready.get("failed", ()):
            self.log.warning("fork server could not preload a module", error=failure)
        threading.Thread(target=self._read, args=(server,), name="forkserver-reader", daemon=True).start()
        return server

    def _read(self, server: _Server) -> None:
        """The reader thread: dispatch the server's messages until its socket closes."""
        while True:
            try:
                data = server.sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            try:
                message = json.loads(data)
            except ValueError:
                continue
            op = message.get("op")
            with self._lock:
                if op == "started":
                    pending = server.pending.pop(message.get("id"), None)
                    if pending is not None:
                        pending.proc.pid = int(message["pid"])
                        server.running[pending.proc.pid] = pending.proc
                        pending.done.set()
                elif op == "refused":
                    pending = server.pending.pop(message.get("id"), None)
                    if pending is not None:
                        pending.error = str(message.get("error"))
                        pending.done.set()
                elif op == "exited":
                    proc = server.running.pop(int(message.get("pid", 0)), None)
                    if proc is not None:
                        proc._finish(int(message["returncode"]))
        self._died(server)

    def _died(self, server: _Server) -> None:
        """The socket closed: collect the server's status, end what it ran, release it."""
        try:
            status = server.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.popen.kill()
            status = server.popen.wait()
        self.children.release(server.popen.pid)
        server.sock.close()
        how = _describe(status)
        with self._lock:
            pending, server.pending = list(server.pending.values()), {}
            running, server.running = list(server.running.values()), {}
            server.dead.set()
            if self._server is server:
                self._server = None
        if not server.closing or running:
            self.log.error("fork server died", pid=server.popen.pid, how=how, runs_lost=len(running))
        reason = f"the fork server died ({how}) during the run; its processes were killed"
        for proc in running:
            signal_group(proc.pid, signal.SIGKILL)  # orphans now: nobody could report their status
            proc._finish(-signal.SIGKILL, reason)
        for item in pending:
            item.error = f"the fork server died ({how}) while starting the run"
            item.done.set()

    def _kill(self, server: _Server, why: str) -> None:
        """Stop a misbehaving server; the reader thread then ends its runs as for a death."""
        if not server.dead.is_set():
            self.log.warning("stopping the fork server", pid=server.popen.pid, reason=why)
            try:
                server.popen.kill()
            except OSError:
                pass

    def _reap(self, server: _Server) -> None:
        if server.popen.poll() is None:
            server.popen.kill()
        server.popen.wait()
        self.children.release(server.popen.pid)
        server.sock.close()

    def close(self) -> None:
        """Stop the server (at daemon shutdown, after the runs ended): EOF, then SIGKILL if need be."""
        with self._lock:
            server, self._server = self._server, None
            self.enabled = False
        if server is None or server.dead.is_set():
            return
        server.closing = True
        try:
            server.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if not server.dead.wait(STOP_TIMEOUT + 1.0):
            server.popen.kill()
            server.dead.wait(STOP_TIMEOUT)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
