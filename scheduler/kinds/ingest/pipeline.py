"""One ingest run: a fetch process or thread (:mod:`~scheduler.kinds.ingest.prefetch`) feeds pages to batch
transforms that stream into Parquet row groups.

Invariants:
- Memory is bounded by the pages fetched ahead (a fixed number, see ``prefetch``), one batch of ``batch_rows``
  records, one buffered row group per partition, and 8 bytes per distinct dedupe/unique key.
- Nothing is published unless every page was fetched, every batch transformed, and every check
  passed; on any failure the temp files are removed and the previous partition stays as it was.
- The returned ``watermark`` covers exactly the published rows; the runner stores it only after
  a successful run, so a failed write never advances it.
- Every error leaving :func:`run` is an :class:`IngestFailed` whose text has secrets redacted and
  no chained exception (the unredacted original is not reachable from it).
- A SIGTERM cannot interrupt publishing (see :func:`scheduler.stopping.sigterm_deferred`): once the
  first rename starts, the run finishes publishing and returns its result, so output, rejects and
  watermark stay together.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa

from scheduler.errors import JobFailed
from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest.checks import CheckFailed, RunStats
from scheduler.kinds.ingest.columns import Batch
from scheduler.kinds.ingest.http import FetchError, source_redactor
from scheduler.kinds.ingest.keys import KeySet, WinnerIndex, digests
from scheduler.kinds.ingest.page_bytes import closes_batch, page_rows
from scheduler.kinds.ingest.pages import ArrowPage
from scheduler.kinds.ingest.prefetch import Prefetch, run_log, start_fetching
from scheduler.kinds.ingest.results import TransformError, reject_frame
from scheduler.kinds.ingest.sink import (
    REJECTS_SCHEMA,
    STALE_AFTER,
    DatasetWriter,
    SchemaError,
    arrow_schema,
    batch_table,
    partition_names,
    to_table,
)
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.kinds.ingest.transform import Transformer
from scheduler.redaction import Redactor
from scheduler.stopping import Deferral, sigterm_deferred

GC_THRESHOLDS = (50_000, 20, 20)  # young collections per container allocations (default 700, 10, 10)
_EXPECTED = (FetchError, CheckFailed, SchemaError, TransformError)


class IngestFailed(JobFailed):
    """The run failed; the message is the recorded reason, secrets redacted."""


def run(spec: IngestJob, ctx: RunContext, prefetch: Prefetch | None = None) -> dict[str, Any]:
    """Fetch, transform, check and publish.  Result keys: ``pages``, ``requests``, ``rows_fetched``,
    ``rows_written``, ``rows_rejected``, ``rows_duplicate``, ``rows_filtered``, ``bytes``,
    ``bytes_fetched``, ``duration``, ``partitions``, ``rejects_partitions`` and, for incremental
    jobs, ``watermark``.  ``prefetch``, made by :func:`start_fetching` and already fetching, is
    closed here whatever happens; without one, fetching starts here."""
    # the fetch thread's logger and masker, when it is already fetching: one of each per run
    log = prefetch.log if prefetch is not None else run_log(ctx)
    redact = prefetch.redact if prefetch is not None else source_redactor(spec.source)
    try:
        with _frozen_heap():
            if prefetch is None:
                prefetch = start_fetching(spec, ctx)
            return _Run(spec, ctx, log, redact, prefetch).execute()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one redacted, unchained error
        message = redact(str(exc) if isinstance(exc, _EXPECTED) else f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, _EXPECTED):
            log.error("ingest.crashed", traceback=redact("".join(traceback.format_exception(exc))))
    finally:
        if prefetch is not None:
            prefetch.close()
    log.error("ingest.failed", error=message)
    raise IngestFailed(message)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """While the run lasts, objects alive when it starts (modules, pandas' and pyarrow's internals,
    the spec) stay out of the cyclic garbage collector's passes, and young collections come every
    :data:`GC_THRESHOLDS` allocations, not every 700.

    Page records are many small containers (a dict per record, nested dicts), so with the default
    thresholds their allocation keeps triggering collections, and each full pass walks every
    imported object too: measured at 200,000 records, 0.5 s of collector time, 0.15 s with this.
    Records die by reference counting; cyclic garbage made during the run is still collected.
    Thresholds are restored at the end and the objects handed back, unless objects were frozen
    before (a fork server's preload, in a child that ends with the run): then all stay frozen.
    """
    ours = gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if ours:
            gc.unfreeze()


class _Run:
    def __init__(self, spec: IngestJob, ctx: RunContext, log: Any, redact: Redactor, prefetch: Prefetch) -> None:
        self.spec, self.ctx, self.log, self.redact, self.prefetch = spec, ctx, log, redact, prefetch
        self.counts = dict(rows_fetched=0, rows_written=0, rows_rejected=0, rows_duplicate=0, rows_filtered=0)
        self._warned: set[tuple[str, str]] = set()

    # --- the run ------------------------------------------------------------------------------------

    def _warn_missing(self, column: str, step: str) -> None:
        if (column, step) not in self._warned:
            self._warned.add((column, step))
            self.log.warning("ingest.column_missing", column=column, step=step)

    def execute(self) -> dict[str, Any]:
        spec, ctx = self.spec, self.ctx
        started = time.monotonic()
        root = ctx.data_dir
        sink = spec.sink
        schema = arrow_schema(sink.schema_)
        tag = f"{ctx.run_id}-{ctx.attempt}-"
        # another host's temp files are abandoned once idle longer than a live writer can be
        stale_after = max(STALE_AFTER, spec.source.deadline.total_seconds())
        self.out = DatasetWriter(root, sink.dataset, schema, sink.mode, merge_key=sink.merge_key,
                                 row_group_size=sink.row_group_size, compression_level=sink.compression_level,
                                 run_tag=tag, stale_after=stale_after)
        self.rejects = DatasetWriter(root, sink.rejects_dataset, REJECTS_SCHEMA,
                                     "append" if sink.mode == "append" else "replace_partition",
                                     row_group_size=sink.row_group_size, run_tag=tag, stale_after=stale_after)
        self.transformer = Transformer(spec.transform, self._warn_missing)
        dedupe = self.transformer.dedupe
        self.first_keys = KeySet() if dedupe and dedupe.keep == "first" and not dedupe.by else None
        self.winners = WinnerIndex(dedupe.keep, dedupe.by is not None) if dedupe and self.first_keys is None else None
        # keep-first dedupe on one key column writes each key once (the key set checks every row
        # written), so a ``unique`` check on that column needs no second key set of its own
        key = dedupe.columns[0] if dedupe and self.first_keys is not None and len(dedupe.columns) == 1 else None
        distinct: tuple[str, ...] = (
            (key,) if key is not None and key in schema.names and schema.field(key).type in (pa.string(), pa.int64())
            else ())
        self.stats = RunStats(spec.checks, spec.incremental.cursor_field if spec.incremental else None, distinct)
        self.day = ctx.logical_date.isoformat()
        published = False
        held: Deferral | None = None
        prefetch = self.prefetch
        self.log.info("ingest.start", dataset=sink.dataset, partition=self.day, mode=sink.mode,
                      stale_temp_removed=self.out.stale_removed + self.rejects.stale_removed)
        prefetch.consuming()
        try:
            self._consume(prefetch)
            self._finish()
            with sigterm_deferred() as held:  # from the first rename on, a SIGTERM must not split the publish
                published_out, published_rejects = self._publish()
            published = True
        finally:
            prefetch.close()
            if not published:
                self.out.abort()
                self.rejects.abort()
        result: dict[str, Any] = {
            "pages": prefetch.pages, **self.counts, "bytes_fetched": prefetch.bytes_fetched,
            "requests": prefetch.requests, "bytes": self.out.bytes + self.rejects.bytes,
            "duration": round(time.monotonic() - started, 3),
            "partitions": [str(p.relative_to(root)) for p in published_out],
            "rejects_partitions": [str(p.relative_to(root)) for p in published_rejects],
        }
        if spec.incremental is not None:
            result["watermark"] = self.stats.watermark() or ctx.watermark or None
        self.log.info("ingest.done", **{k: v for k, v in result.items() if not k.endswith("partitions")})
        if held is not None and held.received:
            self.log.warning("ingest.stop_deferred", reason="SIGTERM while publishing: the run completes")
        return result

    def _consume(self, prefetch: Prefetch) -> None:
        batch: list[ArrowPage | list[Any]] = []
        rows = batch_no = 0
        limit = self.spec.sink.batch_rows
        while True:
            kind, payload = prefetch.get()
            if kind == "error":
                raise payload
            if kind == "page":
                size = page_rows(payload)
                if size:
                    batch.append(payload)
                    rows += size
            if batch and (closes_batch(rows, limit) or kind == "end"):  # the fetch process follows these rules
                self._batch(batch, rows, batch_no)
                batch, rows, batch_no = [], 0, batch_no + 1
            if kind == "end":
                return

    def _batch(self, pages: list[ArrowPage | list[Any]], rows: int, batch_no: int) -> None:
        self.counts["rows_fetched"] += rows
        batch = self.transformer.batch_pages(pages)
        del pages[:]  # the pages (raw dicts or bytes) are the bulk of a batch's memory
        result = self.transformer.apply_batch(batch)
        frame, rejects = result.frame, result.rejects
        self.counts["rows_duplicate"] += result.duplicates
        self.counts["rows_filtered"] += result.filtered
        dedupe = self.transformer.dedupe
        arrow = isinstance(frame, Batch)
        if dedupe is not None and len(frame.index):
            present = [c for c in dedupe.columns if c in frame.columns]
            table = frame.key_table(present) if arrow else None
            keys = table if table is not None else frame.frame(names=present) if arrow else frame
            probe = digests(keys, dedupe.columns)
            if self.first_keys is not None:
                keep = self.first_keys.first_seen(probe)
            else:
                assert self.winners is not None
                by = (frame.series(dedupe.by) if arrow else frame[dedupe.by]) if dedupe.by else None
                values = by.to_numpy(dtype=object) if by is not None else probe
                keep = self.winners.offer(probe, values, batch_no)
            self.counts["rows_duplicate"] += int((~keep).sum())
            frame = frame.keep(keep) if arrow else frame[keep]
        sink = self.spec.sink
        if arrow and sink.partition_by:
            frame, arrow = frame.frame(), False  # partitioning by a column's values: pandas, as before
        if sink.partition_by:
            names = (partition_names(frame[sink.partition_by], sink.partition_timezone) if len(frame)
                     else pd.Series([], dtype=str))
            missing = names.isna()
            if missing.any():
                rejects.append(reject_frame(frame, missing, "partition", f"{sink.partition_by} is null"))
                frame, names = frame[~missing], names[~missing]
            groups = [(str(n), frame[names == n]) for n in names.unique()]
        else:
            groups = [(self.day, frame)]
        for name, part in groups:
            table = batch_table(part, self.out.schema) if isinstance(part, Batch) else to_table(part, self.out.schema)
            self.out.write(name, table, batch_no)
            self.stats.observe(table)
            self.counts["rows_written"] += table.num_rows
        for rejected in rejects:
            self.counts["rows_rejected"] += len(rejected)
            rejected_table = (rejected if isinstance(rejected, pa.Table)
                              else pa.Table.from_pandas(rejected, schema=REJECTS_SCHEMA, preserve_index=False))
            self.rejects.write(self.day, rejected_table, batch_no)
        self.log.info("ingest.batch", batch=batch_no, rows=len(frame.index), rejected=sum(len(r) for r in rejects),
                      pages=self.prefetch.pages)

    def _finish(self) -> None:
        sink = self.spec.sink
        if not sink.partition_by and sink.mode != "append":
            self.out.ensure(self.day)  # zero rows still replace the partition (with an empty file)
        if (not self.counts["rows_rejected"] and sink.mode != "append"
                and (self.rejects.dir / f"date={self.day}").is_dir()):
            self.rejects.ensure(self.day)  # clear the rejects of an earlier run of this date
        dedupe = self.transformer.dedupe
        superseded = self.out.finish(self.winners, dedupe.columns if dedupe else (), observe=self.stats.observe,
                                     on_rewrite=self.stats.reset)
        self.counts["rows_written"] -= superseded
        self.counts["rows_duplicate"] += superseded
        self.rejects.finish()
        failures = self.stats.failures(self.counts["rows_fetched"], self.counts["rows_rejected"], list(sink.schema_))
        if failures:
            raise CheckFailed("checks failed, nothing published: " + "; ".join(failures))
        accounted = sum(self.counts[k] for k in ("rows_written", "rows_rejected", "rows_duplicate", "rows_filtered"))
        if accounted != self.counts["rows_fetched"]:
            self.log.warning("ingest.rows_unaccounted", fetched=self.counts["rows_fetched"], accounted=accounted)

    def _publish(self) -> tuple[list[Any], list[Any]]:
        rejects = self.rejects.publish()  # first: the output partition is the commit point
        return self.out.publish(), rejects
