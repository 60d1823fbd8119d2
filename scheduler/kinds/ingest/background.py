"""Parquet row groups written on a thread of their own, so encoding and compressing overlap the transform.

``ParquetWriter.write_table`` encodes, compresses and writes without holding the GIL, so on a
thread of its own it runs beside the Python work of the next batches (parsing, columns, hooks)
instead of stopping it.  Invariants:

- Tables reach their writers in the order they were submitted, one at a time, each exactly as
  given (the file is byte for byte what writing them in the caller would give).
- At most one table is in flight: :meth:`BackgroundWrites.submit` first waits for the previous
  one, so memory grows by one row group at most.
- An error of a write is raised, as it was raised, by the next :meth:`submit` or :meth:`wait`;
  nothing written after it is attempted.
- :meth:`close` waits for the write in flight and stops the thread; after it nothing runs in the
  background, so temp files can be closed, renamed or removed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq


class BackgroundWrites:
    """One writer thread (started on the first :meth:`submit`) and the write in flight."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def submit(self, writer: pq.ParquetWriter, table: pa.Table, row_group_size: int) -> None:
        """Write ``table`` with ``writer`` in the background, after the write in flight is done."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        self._pending = self._pool.submit(writer.write_table, table, row_group_size=row_group_size)

    def wait(self) -> None:
        """Wait for the write in flight; raise its error, if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in flight (its error, if any, is raised) and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
