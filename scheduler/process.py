"""Child processes: spawn in a new session, stream output lines, signal the whole group, reap orphans.

Invariants:
* every job child is a session (and process group) leader, so signalling ``-pid`` reaches every
  descendant that did not escape with its own ``setsid``;
* :class:`ChildTable` knows the pid of every child we spawned *before* anything could reap it
  (spawn and registration happen under one lock), so the orphan reaper never takes the exit
  status of a child that ``subprocess`` is waiting for (a blanket ``waitpid(-1)`` would, and turn
  a failed job into exit 0).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scheduler import clock

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to reparent orphaned descendants to us even when we are not PID 1."""
    import ctypes  # imported on use: only the daemon asks, and run-job's start-up need not load it

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return result == 0
    except (OSError, AttributeError):
        return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def host_tag() -> str:
    """This host's name as it appears in temp names: letters, digits and ``_`` only, at most 40."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "unknown"


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's per-thread malloc arenas: each run uses short-lived threads, and every new
    arena otherwise keeps its memory, so a long-running daemon's RSS would creep up."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(-8, arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


class ChildTable:
    """Pids of the children this process spawned and still owns the exit status of."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._pids: set[int] = set()

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
              stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session with stdout and stderr on pipes of their own (so each
        relayed line can say which stream it came from); registered atomically."""
        with self.lock:
            proc = subprocess.Popen(
                list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=dict(env), cwd=cwd, start_new_session=True, close_fds=True,
            )
            self._pids.add(proc.pid)
        return proc

    def start(self, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(argv, **popen_kwargs)`` for a helper process, registered atomically
        like :meth:`spawn`'s children (the fork server uses it)."""
        with self.lock:
            proc = subprocess.Popen(list(argv), **popen_kwargs)
            self._pids.add(proc.pid)
        return proc

    def release(self, pid: int) -> None:
        with self.lock:
            self._pids.discard(pid)

    def reap_orphans(self) -> int:
        """Reap exited children that are not ours to wait for (orphans reparented to us).

        Looks for zombies among this process's children (``/proc``), skipping registered pids;
        never calls ``waitpid(-1)``.  The scan runs outside the lock; the lock is held only to
        re-check and reap, so spawning is never blocked by it.  Returns how many were reaped.
        """
        reaped = 0
        for pid in _zombie_children(os.getpid()):
            with self.lock:
                if pid in self._pids:
                    continue
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        reaped += 1
                except ChildProcessError:
                    pass
        return reaped


def _children(parent: int) -> list[int] | None:
    """Children of ``parent`` from ``/proc/PID/task/*/children`` (None where the kernel lacks it)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{parent}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{parent}/task/{task}/children", "rb") as fh:
                found.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        except OSError:
            return None
    return found


def _zombie_children(parent: int) -> list[int]:
    candidates = _children(parent)
    if candidates is None:
        try:
            candidates = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return []
    found = []
    for pid in candidates:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may contain spaces and parens: split after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[0] == b"Z" and int(fields[1]) == parent:
            found.append(pid)
    return found


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, wait up to ``grace`` seconds for it to empty, then SIGKILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = clock.monotonic() + grace
    while clock.monotonic() < deadline:
        if not group_alive(pgid):
            return
        threading.Event().wait(0.05)
    signal_group(pgid, signal.SIGKILL)


class LinePump(threading.Thread):
    """Reads a child's output pipe and hands each decoded line to ``on_line`` as it arrives.

    ``tail`` keeps the last lines; pumps of one child's stdout and stderr may share one (a
    ``deque`` appends atomically), so it holds both streams in the order the lines were read.
    """

    def __init__(self, pipe: object, on_line: Callable[[str], None], tail: int = 50,
                 lines: deque[str] | None = None) -> None:
        super().__init__(daemon=True, name="line-pump")
        self.pipe = pipe
        self.on_line = on_line
        self.tail: deque[str] = lines if lines is not None else deque(maxlen=tail)

    def run(self) -> None:
        for raw in iter(self.pipe.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(line)
            try:
                self.on_line(line)
            except Exception:  # noqa: BLE001 - a logging failure must not stop draining the pipe
                pass
        self.pipe.close()  # type: ignore[attr-defined]

