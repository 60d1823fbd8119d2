"""Helpers for core tests: process inspection (no fixed sleeps; polling is tests/polling.py)."""

from __future__ import annotations

import os
import secrets


def unique_seconds(seconds: int | str) -> str:
    """``seconds`` (a ``sleep`` argument) with random trailing digits, unique to one test run.

    ``processes_with(f"sleep {unique_seconds(211)}")`` then finds only this test's processes,
    even while other tests, or other test sessions on the same host, sleep for as long: the
    digits change the duration by less than a microsecond.
    """
    text = str(seconds)
    return f"{text}{'' if '.' in text else '.'}{secrets.randbelow(10**9):09d}"


def processes_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2:].split()[0]
        if marker in cmdline and state != b"Z":
            found.append(int(entry))
    return found


def zombies_of(parent: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] == b"Z" and int(fields[1]) == parent:
            out.append(int(entry))
    return out


class LoggedProcess:
    """A ``scheduler`` subcommand as a child, JSON log lines collected in a file as they arrive."""

    def __init__(self, argv: list[str], log_path: os.PathLike[str], env: dict[str, str],
                 cwd: os.PathLike[str] | None = None) -> None:
        import subprocess

        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def events(self) -> list[dict]:
        import json

        out = []
        with open(self.log_path, errors="replace") as fh:
            for line in fh.read().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"event": "raw", "line": line})
        return out

    def has(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events())

    def finish(self, sig: int | None = None, timeout: float = 30) -> int:
        """Send ``sig`` (if still running), wait for the exit code, close the log."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return found
