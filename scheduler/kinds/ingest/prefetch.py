"""The fetch side of an ingest run: fetches pages, reads them and hands them over, in a process of
its own where the run owns its process, else in a thread.

It starts before the transform side of the run is imported (this module imports no pandas), so a
run that starts a fresh interpreter fetches and parses its first pages while pandas loads.

Where: a forked child (:mod:`~scheduler.kinds.ingest.forked`) when the caller runs in the main
thread of a process with no other Python thread (a worker, a fork server's child: forking is
safe there, and the fetch side then has a core and an interpreter lock of its own); a thread
otherwise (a run called inside a process that has threads, as tests do).  Both run the same
loop (:meth:`Prefetch._produce`) and hand over the same items.

Invariants:
- Until :meth:`Prefetch.consuming` is called at most :data:`STARTUP_PAGES` pages wait in a
  thread's queue (:data:`CHILD_STARTUP_PAGES` in a child), then at most :data:`PREFETCH_PAGES`
  (:data:`CHILD_AHEAD_PAGES`, plus the pipe's own buffer, in a child): memory stays bounded by
  a fixed number of pages.
- Items are ``("page", ArrowPage | list of records)``, then exactly one of ``("end", None)`` or
  ``("error", exc)``; nothing follows them.  A child that ends early gives an ``("error", ...)``
  naming how it ended.  From a child, an Arrow page comes without its bytes where its batch
  does not need them, and with them (restored by the time the batch's last page is handed over)
  where it does (:mod:`~scheduler.kinds.ingest.page_bytes`).
- :meth:`Prefetch.close` stops the fetching (a thread never blocks on a full queue past a stop; a
  child is killed if still running, and reaped) and closes the HTTP connections.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import forked
from scheduler.kinds.ingest.http import Fetcher, FetchError, source_redactor
from scheduler.kinds.ingest.page_bytes import HeldBytes, ReturnedBytes
from scheduler.kinds.ingest.pages import ArrowPage, PageReader
from scheduler.kinds.ingest.paginate import Paginator, Request, extract_records
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.kinds.ingest.spec_source import Source
from scheduler.redaction import Redactor

PREFETCH_PAGES = 4
STARTUP_PAGES = 32  # pages fetched ahead while the transform side is still starting
# a child runs ahead further: the transform side takes pages a batch at a time, and a child that
# could not fetch on while a batch is transformed would take turns with it instead of overlapping
CHILD_AHEAD_PAGES = 16
# and further at start-up: a fresh worker imports pandas for about 0.3 s, which a child on the
# other core spends fetching (at 200,000 records, 0.3 s less wall time than with 32; 96 was no
# faster than 64 and held 11 MB more at the run's start)
CHILD_STARTUP_PAGES = 64


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


def start_fetching(spec: IngestJob, ctx: RunContext, in_process: bool | None = None) -> Prefetch:
    """A started :class:`Prefetch` for one run of ``spec``; ``in_process`` None chooses (see above)."""
    return Prefetch(spec, ctx, run_log(ctx), source_redactor(spec.source)).start(in_process)


def may_fork() -> bool:
    """Whether forking is safe here: the main thread, no other Python thread (none holds a lock the
    child would inherit held)."""
    return threading.current_thread() is threading.main_thread() and threading.active_count() == 1


class Prefetch:
    """Fetches the pages of one run in a process or a thread of its own; the fetch deadline starts here."""

    def __init__(self, spec: IngestJob, ctx: RunContext, log: Any, redact: Redactor) -> None:
        # Runs execute in a worker process of their own.  The system allocator hands freed batch
        # buffers back at once; Arrow's default mimalloc pool caches them (about +20 MB of RSS here).
        pa.set_memory_pool(pa.system_memory_pool())
        self.spec, self.ctx, self.log, self.redact = spec, ctx, log, redact
        self.params = {**spec.params, **ctx.params}
        self.fetcher = Fetcher(spec.source, redact, log)
        self.pages = 0
        self.bytes_fetched = 0
        self._requests = 0
        self._child: forked.Child | None = None
        self._returned = ReturnedBytes()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._room = threading.Condition()
        self._limit = STARTUP_PAGES
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self._put,), name=f"ingest-fetch-{ctx.job}",
                                        daemon=True)

    def start(self, in_process: bool | None = None) -> Prefetch:
        """Start fetching: in a forked child when ``in_process``, else in a thread; None forks
        when :func:`may_fork` says so now, right before the fork."""
        if in_process is None:
            in_process = may_fork()
        if in_process:
            self._child = forked.fork(self._serve, CHILD_STARTUP_PAGES, CHILD_AHEAD_PAGES)
        else:
            self._thread.start()
        return self

    @property
    def requests(self) -> int:
        """HTTP requests made so far (the child's count as of the last item handed over)."""
        return self._requests if self._child is not None else self.fetcher.requests

    def consuming(self) -> None:
        """The transform side is up: from now on keep only :data:`PREFETCH_PAGES` pages ahead."""
        if self._child is not None:
            self._child.consuming()
        with self._room:
            self._limit = PREFETCH_PAGES

    def get(self) -> tuple[str, Any]:
        if self._child is not None:
            return self._receive(self._child)
        item = self._queue.get()
        with self._room:
            self._room.notify()
        return item

    def close(self) -> None:
        self._stop.set()
        if self._child is not None:
            self._child.end()
        with self._room:
            self._room.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.fetcher.close()

    def _receive(self, child: forked.Child) -> tuple[str, Any]:
        while True:
            try:
                kind, payload, self.pages, self.bytes_fetched, self._requests = child.inbox.get()
            except EOFError:
                return "error", FetchError(f"the fetch process ended early ({child.exit_reason()})")
            if kind != "bytes":
                break
            self._returned.restore(payload)
        if kind == "page":
            self._returned.received(self.pages, payload)
        elif kind == "error":
            payload = payload.exception()
        return kind, payload

    # --- the fetch process ------------------------------------------------------------------------

    def _serve(self, outbox: forked.Outbox) -> None:
        """The child's work: the fetch loop, each item sent with the counts as they stand; a page's
        bytes only where its batch needs them (:mod:`~scheduler.kinds.ingest.page_bytes`)."""
        held = HeldBytes(self.spec.sink.batch_rows)

        def send(item: tuple[str, Any]) -> None:
            kind, payload = item
            counts = (self.pages, self.bytes_fetched, self.fetcher.requests)
            if kind == "error":
                payload = forked.CrossedError.of(payload)
            elif kind == "page":
                for page_bytes in held.page(self.pages, payload):  # one message each: no burst of a batch's bytes
                    outbox.send(("bytes", [page_bytes], *counts))
            outbox.send((kind, payload, *counts))

        self._produce(send)

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

    def _produce(self, put: Callable[[tuple[str, Any]], None]) -> None:
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
                put(("page", item))
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> None:
        with self._room:
            while self._queue.qsize() >= self._limit and not self._stop.is_set():
                self._room.wait(timeout=0.2)
        if not self._stop.is_set():
            self._queue.put(item)
