"""Helpers for core tests: bounded polling and process inspection (no fixed sleeps)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


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
