"""Forward a container's output into the run's log, line by line, as it arrives.

The attach stream delivers frames in the order the container wrote them, each tagged stdout or
stderr; frames are not lines (one may hold several, or half of one), so each stream keeps its own
partial-line buffer.  A line that never ends is cut at ``MAX_LINE`` bytes rather than held.

A live stream that does not end by itself (Swarm service logs, followed) is closed once the task
has ended, and :meth:`LineStreamer.catch_up` then reads the complete output once more and forwards
only the bytes the live stream had not delivered: every byte is logged once, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.kinds.base import RunContext

MAX_LINE = 64 * 1024


class LineStreamer:
    """Reads ``(stdout_chunk, stderr_chunk)`` pairs on a daemon thread and logs complete lines.

    ``frames`` is the demuxed attach stream (a ``CancellableStream``); ``log`` gets
    ``info("output", line=..., stream="stdout"|"stderr")``, the shape every kind's output has.
    ``lines`` counts what was forwarded.  With ``flush_at_end=False`` a partial last line stays
    buffered when the stream ends, for :meth:`catch_up` to complete.
    """

    def __init__(
        self, frames: Iterable[tuple[bytes | None, bytes | None]], log: Any, *, flush_at_end: bool = True
    ) -> None:
        self._frames = frames
        self._log = log
        self._flush_at_end = flush_at_end
        self._buffers = {"stdout": b"", "stderr": b""}
        self._read = {"stdout": 0, "stderr": 0}  # bytes received per stream
        self._thread = threading.Thread(target=self._run, name="container-output", daemon=True)
        self.lines = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the stream to end; on timeout close it.  True when it ended by itself."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.close()
            self._thread.join(1.0)
            return False
        return True

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # closing a half-dead socket may fail; the stream is over either way
                pass

    def catch_up(self, frames: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        """Forward what ``frames`` (the complete output, read again after the live stream was
        closed) holds beyond the bytes already received, then the partial last lines.

        Call after :meth:`join`; if the live reader is somehow still alive, only flush (two
        readers would interleave)."""
        if not self._thread.is_alive():
            seen = {"stdout": 0, "stderr": 0}
            for out, err in frames:
                for stream, chunk in (("stdout", out), ("stderr", err)):
                    if not chunk:
                        continue
                    skip = max(0, self._read[stream] - seen[stream])
                    seen[stream] += len(chunk)
                    if skip < len(chunk):
                        self._read[stream] += len(chunk) - skip
                        self._feed(stream, chunk[skip:])
        self._flush()

    def _run(self) -> None:
        try:
            for out, err in self._frames:
                if out:
                    self._read["stdout"] += len(out)
                    self._feed("stdout", out)
                if err:
                    self._read["stderr"] += len(err)
                    self._feed("stderr", err)
        except Exception as exc:  # a closed socket ends the stream; the exit state decides the run
            self.error = exc
        finally:
            if self._flush_at_end:
                self._flush()

    def _flush(self) -> None:
        for stream, rest in self._buffers.items():
            if rest:
                self._emit(stream, rest)
        self._buffers = {"stdout": b"", "stderr": b""}

    def _feed(self, stream: str, chunk: bytes) -> None:
        data = self._buffers[stream] + chunk
        *complete, rest = data.split(b"\n")
        for line in complete:
            self._emit(stream, line)
        while len(rest) > MAX_LINE:
            self._emit(stream, rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._buffers[stream] = rest

    def _emit(self, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.lines += 1
        # Same level for both: programs write ordinary progress to stderr (Python's logging does).
        self._log.info("output", line=line, stream=stream)


def run_logger(ctx: RunContext) -> Any:
    """The run's logger: the worker's bound one, else one bound to job, run id and attempt."""
    if ctx.log is not None:
        return ctx.log
    import structlog

    return structlog.get_logger("scheduler.container").bind(job=ctx.job, run_id=ctx.run_id, attempt=ctx.attempt)
