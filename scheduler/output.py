"""A run's output, kept: every line its attempts print, secrets masked, bounded, in the state store.

:class:`RunOutput` receives the lines the runner relays (stdout and stderr of command and python
jobs, the worker's log lines of ingest jobs, a container's logs) and writes them to the store's
``run_output`` table in batches while the run goes on, so ``scheduler logs --follow`` (on any host
sharing the store) sees them live.

Invariants:

* at most ``max_bytes`` of text per run is kept: the first half (the head, written as it comes)
  and the newest half (the tail); lines in between are deleted as the tail moves on and replaced by
  one marker line ``[... N lines (X MiB) cut ...]`` at the sequence number right after the head;
* ``seq`` numbers only grow within a run, so readers page with "lines after seq N";
* a line is masked by the runner's redactor before it is buffered: no secret reaches the store;
* storing output never fails or stalls a run: the child's pipes are drained by threads that only
  append to a list; a background thread does the writes, and a store error is logged once.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scheduler import clock
from scheduler.logs import get_logger
from scheduler.stores.records import SCHEDULER_STREAM, OutputLine

if TYPE_CHECKING:
    from scheduler.stores.protocol import StateStore

DEFAULT_MAX_OUTPUT = 1024 * 1024
MAX_LINE = 64 * 1024  # characters; a longer line is cut (a progress bar without newlines)
FLUSH_EVERY = 0.25  # seconds between batched writes: what --follow lags behind at most
_DROPPED_FIELDS = ("timestamp", "job", "run_id", "attempt", "logger")


def format_bytes(size: float) -> str:
    """``3355443`` -> ``3.2 MiB`` (binary units, one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def cut_marker(lines: int, size: int) -> str:
    """The line standing for what was cut from the middle of a long output."""
    return f"[... {lines:,} lines ({format_bytes(size)}) cut ...]"


def display_line(line: str, stream: str) -> tuple[str, str]:
    """``(stream, text)`` to store for one relayed line.

    The worker writes its log events (and a container's output) as JSON lines: an ``output``
    event becomes its own line on its own stream; other events a compact ``level event k=v``.
    """
    if not (line.startswith("{") and line.endswith("}")):
        return stream, line
    try:
        event = json.loads(line)
    except ValueError:
        return stream, line
    if not isinstance(event, dict) or "event" not in event:
        return stream, line
    if event.get("event") == "output" and isinstance(event.get("line"), str):
        return str(event.get("stream") or stream), event["line"]
    level = str(event.pop("level", "info")).lower()
    name = str(event.pop("event"))
    fields = " ".join(f"{k}={_field(v)}" for k, v in event.items() if k not in _DROPPED_FIELDS)
    return stream, f"{level} {name}" + (f" {fields}" if fields else "")


def _field(value: Any) -> str:
    return value if isinstance(value, str) and value and " " not in value else json.dumps(value, default=str)


class RunOutput:
    """The bounded, masked, batched output of one run.  :meth:`open`, :meth:`add`, :meth:`close`."""

    def __init__(self, store: StateStore, run_id: int, redact: Callable[[str], str],
                 max_bytes: int = DEFAULT_MAX_OUTPUT, flush_every: float = FLUSH_EVERY) -> None:
        self.store = store
        self.run_id = run_id
        self.redact = redact
        self.flush_every = flush_every
        self._head_budget = max_bytes // 2
        self._tail_budget = max_bytes - self._head_budget
        self._max_line = max(16, min(MAX_LINE, self._tail_budget // 2))
        self._lock = threading.Lock()  # guards the buffers; never held during a store write
        self._flush_lock = threading.Lock()  # one write at a time, in order
        self._seq = 0
        self._head_bytes = 0
        self._marker_seq: int | None = None  # reserved when the head fills up
        self._tail: deque[tuple[int, int]] = deque()  # (seq, bytes) of the kept tail lines
        self._tail_bytes = 0
        self._cut_through = 0  # every seq in (marker_seq, cut_through] is cut
        self._cut_lines = 0
        self._cut_bytes = 0
        self._deleted_through = 0
        self._marker_dirty = False
        self._pending: list[OutputLine] = []
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    @classmethod
    def open(cls, store: StateStore, run_id: int, redact: Callable[[str], str],
             max_bytes: int = DEFAULT_MAX_OUTPUT) -> RunOutput:
        """Forget the run's previous output (a rerun of its slot) and start the writer thread."""
        output = cls(store, run_id, redact, max_bytes)
        try:
            store.clear_output(run_id)
        except Exception as exc:  # noqa: BLE001 - output is a record of the run, never a reason to fail it
            output._warn(exc)
        output._thread = threading.Thread(target=output._writer, name=f"output-{run_id}", daemon=True)
        output._thread.start()
        return output

    # --- lines in (pump threads) ------------------------------------------------------------
    def add(self, line: str, stream: str) -> None:
        """Keep one line of the run's output (after masking it); ignored once closed."""
        if self._closed.is_set():
            return
        stream, text = display_line(line, stream)
        text = self.redact(text)
        if len(text) > self._max_line:
            text = f"{text[:self._max_line]} [... {len(text) - self._max_line:,} characters cut]"
        size = len(text.encode("utf-8", "replace")) + 1
        with self._lock:
            self._seq += 1
            if self._marker_seq is None:
                if self._head_bytes + size <= self._head_budget:
                    self._head_bytes += size
                    self._pending.append(OutputLine(self._seq, stream, text, clock.now()))
                    return
                self._marker_seq = self._seq  # the head is full: this number is the marker's
                self._seq += 1
            self._pending.append(OutputLine(self._seq, stream, text, clock.now()))
            self._tail.append((self._seq, size))
            self._tail_bytes += size
            while self._tail_bytes > self._tail_budget and self._tail:
                seq, dropped = self._tail.popleft()
                self._tail_bytes -= dropped
                self._cut_lines += 1
                self._cut_bytes += dropped
                self._cut_through = seq
                self._marker_dirty = True

    def note(self, text: str) -> None:
        """A line of the scheduler's own in the output (``[attempt 2]``)."""
        self.add(text, SCHEDULER_STREAM)

    # --- writes (writer thread, and close) ----------------------------------------------------
    def flush(self) -> None:
        """Write the lines buffered since the last flush, delete the newly cut ones, update the marker."""
        with self._flush_lock:
            with self._lock:
                marker, through = self._marker_seq, self._cut_through
                rows = [r for r in self._pending if marker is None or not marker < r.seq <= through]
                self._pending = []
                cut = ((max(marker, self._deleted_through), through)
                       if marker is not None and through > self._deleted_through else None)
                if self._marker_dirty and marker is not None:
                    rows.append(OutputLine(marker, SCHEDULER_STREAM, cut_marker(self._cut_lines, self._cut_bytes),
                                           clock.now()))
                    self._marker_dirty = False
            if not rows and cut is None:
                return
            try:
                self.store.write_output(self.run_id, rows, cut)
            except Exception as exc:  # noqa: BLE001 - see open(); keep the batch for the next try
                self._warn(exc)
                with self._lock:
                    self._pending = [r for r in rows if r.seq != marker] + self._pending
                    self._marker_dirty = self._marker_dirty or any(r.seq == marker for r in rows)
                return
            if cut is not None:
                self._deleted_through = cut[1]

    def _writer(self) -> None:
        while not self._closed.wait(self.flush_every):
            self.flush()

    def close(self) -> None:
        """Stop taking lines and write what is left (the run is over)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            get_logger(run_id=self.run_id).warning("run output not stored", error=self.redact(str(exc)))

    @property
    def cut(self) -> tuple[int, int]:
        """``(lines, bytes)`` cut so far."""
        with self._lock:
            return self._cut_lines, self._cut_bytes


def tee(relay: Callable[[str], None], output: RunOutput | None, stream: str) -> Callable[[str], None]:
    """A line handler that relays a line (the log) and keeps it in ``output``."""
    if output is None:
        return relay

    def both(line: str) -> None:
        try:
            output.add(line, stream)
        finally:
            relay(line)

    return both
