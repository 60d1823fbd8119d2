"""One ingest run: a fetch thread feeds pages to batch transforms that stream into Parquet row groups.

Invariants:
- Memory is bounded by the page queue (``PREFETCH_PAGES`` pages), one batch of ``batch_rows``
  raw records, one buffered row group per partition, and 8 bytes per distinct dedupe/unique key.
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

import dataclasses
import gc
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa
import structlog

from scheduler.errors import JobFailed
from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest.checks import CheckFailed, RunStats
from scheduler.kinds.ingest.columns import Batch
from scheduler.kinds.ingest.http import Fetcher, FetchError, source_redactor
from scheduler.kinds.ingest.keys import KeySet, WinnerIndex, digests
from scheduler.kinds.ingest.pages import ArrowPage, PageReader
from scheduler.kinds.ingest.paginate import Paginator, Request, extract_records
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
from scheduler.kinds.ingest.spec_source import Source
from scheduler.kinds.ingest.transform import Transformer
from scheduler.redaction import Redactor
from scheduler.stopping import Deferral, sigterm_deferred

PREFETCH_PAGES = 4
GC_THRESHOLDS = (50_000, 20, 20)  # young collections per container allocations (default 700, 10, 10)
_EXPECTED = (FetchError, CheckFailed, SchemaError, TransformError)


def page_reader(source: Source) -> PageReader | None:
    """The Arrow page reader for ``source``, or None where pages take the reference path: records
    under a dotted path, pagination reading a value under the records' key, or a body that is the
    list of records while pagination reads the body."""
    reader = PageReader(source.records)
    paths = [p for p in (getattr(source.pagination, name, None) for name in
                         ("total_pages_path", "total_path", "cursor_path", "next_url_path")) if p is not None]
    if source.records is None:
        usable = not paths
    else:
        usable = reader.usable and not any(p.split(".")[0] == source.records for p in paths)
    return reader if usable else None


class IngestFailed(JobFailed):
    """The run failed; the message is the recorded reason, secrets redacted."""


def run(spec: IngestJob, ctx: RunContext) -> dict[str, Any]:
    """Fetch, transform, check and publish.  Result keys: ``pages``, ``requests``, ``rows_fetched``,
    ``rows_written``, ``rows_rejected``, ``rows_duplicate``, ``rows_filtered``, ``bytes``,
    ``bytes_fetched``, ``duration``, ``partitions``, ``rejects_partitions`` and, for incremental
    jobs, ``watermark``."""
    log = ctx.log if ctx.log is not None else structlog.get_logger().bind(job=ctx.job, run_id=ctx.run_id)
    # Runs execute in a worker process of their own.  The system allocator hands freed batch
    # buffers back at once; Arrow's default mimalloc pool caches them (about +20 MB of RSS here).
    pa.set_memory_pool(pa.system_memory_pool())
    redact = source_redactor(spec.source)
    try:
        with _frozen_heap():
            return _Run(spec, ctx, log, redact).execute()
    except Exception as exc:  # noqa: BLE001 - every failure becomes one redacted, unchained error
        message = redact(str(exc) if isinstance(exc, _EXPECTED) else f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, _EXPECTED):
            log.error("ingest.crashed", traceback=redact("".join(traceback.format_exception(exc))))
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
    def __init__(self, spec: IngestJob, ctx: RunContext, log: Any, redact: Redactor) -> None:
        self.spec, self.ctx, self.log, self.redact = spec, ctx, log, redact
        self.params = {**spec.params, **ctx.params}
        self.counts = dict(pages=0, rows_fetched=0, rows_written=0, rows_rejected=0, rows_duplicate=0,
                           rows_filtered=0, bytes_fetched=0)
        self._warned: set[tuple[str, str]] = set()
        self._stop = threading.Event()

    # --- requests ---------------------------------------------------------------------------------

    def _template(self, text: str) -> str:
        values = {k: str(v) for k, v in self.params.items()} | self.ctx.template_vars()
        if self.spec.incremental is not None and not self.ctx.watermark:
            values["watermark"] = self.spec.incremental.initial
        return text.format_map(values)

    def _paginator(self) -> tuple[Paginator, dict[str, str]]:
        src = self.spec.source
        url = src.base_url.rstrip("/") + ("/" + self._template(src.path).lstrip("/") if src.path else "")
        query = {k: self._template(v) for k, v in src.params.items()}
        for key in query.keys() & self.params.keys():  # run params override query params by name
            query[key] = str(self.params[key])
        size_param = getattr(src.pagination, "size_param", None)
        override = self.params.get("page_size", self.params.get(size_param) if size_param else None)
        return Paginator(src.pagination, url, query, int(override) if override else None), {
            k: self._template(v) for k, v in src.headers.items()}

    def _produce(self, fetcher: Fetcher, pages: queue.Queue[tuple[str, Any]]) -> None:
        """Fetch thread: pages go to the queue as ``("page", records)``, then ``("end", None)`` or
        ``("error", exc)``."""
        max_pages = int(self.params.get("max_pages", self.spec.source.max_pages))
        reader = page_reader(self.spec.source)
        try:
            paginator, headers = self._paginator()
            request: Request | None = paginator.first()
            while request is not None and not self._stop.is_set():
                if self.counts["pages"] >= max_pages:
                    raise FetchError(f"more than max_pages={max_pages} pages: stopping (raise max_pages if expected)")
                page = fetcher.fetch(request.url, request.params, headers)
                read = reader.read(page.body) if reader is not None else None
                if read is not None:  # records as Arrow columns, parsed without holding the GIL
                    item: ArrowPage | list[Any] = read
                    page, rows = dataclasses.replace(page, body=read.body), read.rows
                else:
                    page = fetcher.parsed(page)
                    item = extract_records(page.body, self.spec.source.records)
                    rows = len(item)
                request = paginator.next(page, rows)
                self.counts["pages"] += 1
                self.counts["bytes_fetched"] += page.nbytes
                self._put(pages, ("page", item))
            self._put(pages, ("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(pages, ("error", exc))

    def _put(self, pages: queue.Queue[tuple[str, Any]], item: tuple[str, Any]) -> None:
        while not self._stop.is_set():
            try:
                pages.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

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
        pages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=PREFETCH_PAGES)
        fetcher = Fetcher(spec.source, self.redact, self.log)
        thread = threading.Thread(target=self._produce, args=(fetcher, pages), name=f"ingest-fetch-{ctx.job}",
                                  daemon=True)
        self.log.info("ingest.start", dataset=sink.dataset, partition=self.day, mode=sink.mode,
                      stale_temp_removed=self.out.stale_removed + self.rejects.stale_removed)
        thread.start()
        try:
            self._consume(pages)
            self._finish()
            with sigterm_deferred() as held:  # from the first rename on, a SIGTERM must not split the publish
                published_out, published_rejects = self._publish()
            published = True
        finally:
            self._stop.set()
            thread.join(timeout=5)
            fetcher.close()
            if not published:
                self.out.abort()
                self.rejects.abort()
        result: dict[str, Any] = {
            **self.counts, "requests": fetcher.requests, "bytes": self.out.bytes + self.rejects.bytes,
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

    def _consume(self, pages: queue.Queue[tuple[str, Any]]) -> None:
        batch: list[ArrowPage | list[Any]] = []
        rows = batch_no = 0
        limit = self.spec.sink.batch_rows
        while True:
            kind, payload = pages.get()
            if kind == "error":
                raise payload
            if kind == "page":
                size = payload.rows if isinstance(payload, ArrowPage) else len(payload)
                if size:
                    batch.append(payload)
                    rows += size
            if batch and (rows >= limit or kind == "end"):
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
                      pages=self.counts["pages"])

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
