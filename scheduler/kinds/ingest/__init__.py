"""The ``ingest`` job kind: an HTTP API, page by page, to a cleaned, checked Parquet partition.

Modules, one job each: ``spec`` (the frozen config model), ``http`` (the fetcher on urllib3:
redirects, retries, deadline, redaction), ``pacing`` (the rate limit, urllib3's ``Retry`` held
to the deadline, the watchdog that ends a body read at it), ``cookies`` (what the source sets,
sent back), ``responses`` (what a fetch returns: raw bytes or parsed JSON), ``paginate`` (which
request comes next), ``prefetch`` (the fetch side: a forked child or a thread), ``forked``
(that child and the pipe to it), ``pages`` (a page's records read straight
into Arrow columns), ``page_batch`` (the pages of a batch as one batch), ``expr`` (safe column
expressions), ``columns`` (a batch of records as Arrow columns, with the pandas view hooks and
rejects see), ``arrow_steps`` (the cleaning steps as ``pyarrow.compute`` kernels), ``transform``
(the steps in pandas, for hooks and whatever the kernels leave to it), ``results`` (a batch's
outcome and reject records), ``keys`` (compact key sets for dedupe, unique and merge),
``checks`` (gates before publishing), ``sink`` (atomic Parquet publishing) and ``pipeline``
(the run: batches transformed and written).

Importing this package is cheap: pandas, pyarrow and urllib3 are imported only when a run
starts, so the daemon can load ingest specs without them; a run loads requests only for its
``Link`` header parser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scheduler.kinds.base import RunContext
    from scheduler.kinds.ingest.spec import IngestJob


def execute(spec: IngestJob, ctx: RunContext) -> dict[str, Any]:
    """Run one ingest attempt; see :func:`scheduler.kinds.ingest.pipeline.run` for the result keys.

    Fetching starts first: the first pages arrive while the transform side (pandas) imports."""
    from scheduler.kinds.ingest.prefetch import Prefetch, start_fetching

    prefetch: Prefetch | None
    try:
        prefetch = start_fetching(spec, ctx)
    except Exception:  # noqa: BLE001 - run() tries again and reports it as the run's (redacted) failure
        prefetch = None
    try:
        from scheduler.kinds.ingest.pipeline import run
    except BaseException:
        if prefetch is not None:
            prefetch.close()
        raise
    return run(spec, ctx, prefetch)


__all__ = ["execute"]
