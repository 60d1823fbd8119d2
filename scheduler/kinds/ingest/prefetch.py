"""The fetch side of an ingest run: a thread that fetches pages, reads them and queues them.

It starts before the transform side of the run is imported (this module imports no pandas), so a
run that starts a fresh interpreter fetches and parses its first pages while pandas loads.

Invariants:
- The queue holds at most :data:`STARTUP_PAGES` pages until :meth:`Prefetch.consuming` is called,
  then at most :data:`PREFETCH_PAGES`: memory stays bounded by a few pages.
- Items are ``("page", ArrowPage | list of records)``, then exactly one of ``("end", None)`` or
  ``("error", exc)``; nothing follows them.
- :meth:`Prefetch.close` stops the thread (it never blocks on a full queue past a stop) and
  closes the HTTP connections.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pyarrow as pa

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest.http import Fetcher, FetchError, source_redactor
from scheduler.kinds.ingest.pages import ArrowPage, PageReader
from scheduler.kinds.ingest.paginate import Paginator, Request, extract_records
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.kinds.ingest.spec_source import Source
from scheduler.redaction import Redactor

PREFETCH_PAGES = 4
STARTUP_PAGES = 32  # pages fetched ahead while the transform side is still starting


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


def run_log(ctx: RunContext) -> Any:
    """The run's logger: the worker's, or (a run called directly) one bound to the job and run."""
    if ctx.log is not None:
        return ctx.log
    import structlog

    return structlog.get_logger().bind(job=ctx.job, run_id=ctx.run_id)


def start_fetching(spec: IngestJob, ctx: RunContext) -> Prefetch:
    """A started :class:`Prefetch` for one run of ``spec``."""
    return Prefetch(spec, ctx, run_log(ctx), source_redactor(spec.source)).start()


class Prefetch:
    """Fetches the pages of one run in a thread of its own; the fetch deadline starts here."""

    def __init__(self, spec: IngestJob, ctx: RunContext, log: Any, redact: Redactor) -> None:
        # Runs execute in a worker process of their own.  The system allocator hands freed batch
        # buffers back at once; Arrow's default mimalloc pool caches them (about +20 MB of RSS here).
        pa.set_memory_pool(pa.system_memory_pool())
        self.spec, self.ctx, self.log, self.redact = spec, ctx, log, redact
        self.params = {**spec.params, **ctx.params}
        self.fetcher = Fetcher(spec.source, redact, log)
        self.pages = 0
        self.bytes_fetched = 0
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._room = threading.Condition()
        self._limit = STARTUP_PAGES
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"ingest-fetch-{ctx.job}", daemon=True)

    def start(self) -> Prefetch:
        self._thread.start()
        return self

    def consuming(self) -> None:
        """The transform side is up: from now on keep only :data:`PREFETCH_PAGES` pages ahead."""
        with self._room:
            self._limit = PREFETCH_PAGES

    def get(self) -> tuple[str, Any]:
        item = self._queue.get()
        with self._room:
            self._room.notify()
        return item

    def close(self) -> None:
        self._stop.set()
        with self._room:
            self._room.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.fetcher.close()

    # --- the fetch thread ---------------------------------------------------------------------------

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

    def _produce(self) -> None:
        max_pages = int(self.params.get("max_pages", self.spec.source.max_pages))
        reader = page_reader(self.spec.source)
        fetcher = self.fetcher
        try:
            paginator, headers = self._paginator()
            request: Request | None = paginator.first()
            while request is not None and not self._stop.is_set():
                if self.pages >= max_pages:
                    raise FetchError(f"more than max_pages={max_pages} pages: stopping (raise max_pages if expected)")
                raw = fetcher.fetch(request.url, request.params, headers)
                read = reader.read(raw.content) if reader is not None else None
                if read is not None:  # records as Arrow columns, parsed without holding the GIL
                    item: ArrowPage | list[Any] = read
                    page, rows = raw.page(read.body), read.rows
                else:
                    page = fetcher.parsed(raw)
                    item = extract_records(page.body, self.spec.source.records)
                    rows = len(item)
                request = paginator.next(page, rows)
                self.pages += 1
                self.bytes_fetched += page.nbytes
                self._put(("page", item))
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> None:
        with self._room:
            while self._queue.qsize() >= self._limit and not self._stop.is_set():
                self._room.wait(timeout=0.2)
        if not self._stop.is_set():
            self._queue.put(item)
