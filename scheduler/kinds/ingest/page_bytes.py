"""Which page bytes cross from the fetch process to the transform side.

A page read by Arrow crosses the pipe as columns; its bytes are needed on the other side only
where its batch must be read the reference way
(:meth:`~scheduler.kinds.ingest.transform.Transformer.batch_pages` falls back to
:meth:`~scheduler.kinds.ingest.pages.ArrowPage.python_records`): when a page of the batch came as
Python records (the reader declined it), or when the batch's pages differ in column kinds (only
then can :func:`~scheduler.kinds.ingest.page_batch.pages_to_batch` decline).  The fetch process
follows the batches as the transform side cuts them (:func:`page_rows` and :func:`closes_batch`,
the rules both use), sends a page without its bytes while its batch is all Arrow pages of one
kind, and holds those bytes until the batch is complete.  The first page that breaks the rule
sends the held bytes ahead of itself, and the rest of that batch crosses with its bytes, so a
batch that needs the reference path has every page's bytes before its last page arrives.

Invariant: a batch whose pages are not all Arrow pages of equal :meth:`ArrowPage.kinds` holds
the bytes of each of its pages once the transform side has taken its last page.  Memory: the
fetch process holds at most one batch of page bytes, which the transform side no longer holds.
"""

from __future__ import annotations

import weakref
from typing import Any

from scheduler.kinds.ingest.pages import ArrowPage


def page_rows(item: ArrowPage | list[Any]) -> int:
    """The records a page adds to its batch (a page of none joins no batch)."""
    return item.rows if isinstance(item, ArrowPage) else len(item)


def closes_batch(rows: int, batch_rows: int) -> bool:
    """Whether a batch of ``rows`` records is complete."""
    return rows >= batch_rows


class HeldBytes:
    """The fetch process's side: strips the bytes of pages whose batch can be built from Arrow
    columns, and hands them back when a page of the batch makes it need the reference path."""

    def __init__(self, batch_rows: int) -> None:
        self._limit = batch_rows
        self._rows = 0
        self._kinds: tuple[tuple[str, Any], ...] | None = None  # of the open batch's pages
        self._columns_only = True  # the open batch's pages so far are Arrow pages of those kinds
        self._held: list[tuple[int, bytes]] = []

    def page(self, number: int, item: ArrowPage | list[Any]) -> list[tuple[int, bytes]]:
        """Before page ``number`` is sent: its bytes are dropped from ``item`` where its batch
        does not need them; returns the bytes of earlier pages to send ahead of it (by number)."""
        rows = page_rows(item)
        if not rows:  # a page of no records joins no batch
            if isinstance(item, ArrowPage):
                item.content = None
            return []
        back: list[tuple[int, bytes]] = []
        if self._columns_only:
            kinds = item.kinds() if isinstance(item, ArrowPage) else None
            if isinstance(item, ArrowPage) and item.content is not None and self._kinds in (None, kinds):
                self._kinds = kinds
                self._held.append((number, item.content))
                item.content = None
            else:
                self._columns_only = False
                back, self._held = self._held, []
        self._rows += rows
        if closes_batch(self._rows, self._limit):
            self._rows, self._kinds, self._columns_only, self._held = 0, None, True, []
        return back


class ReturnedBytes:
    """The transform side's: remembers the received pages that came without their bytes (weakly:
    a page is forgotten once its batch is done) and gives them their bytes when those come."""

    def __init__(self) -> None:
        self._waiting: weakref.WeakValueDictionary[int, ArrowPage] = weakref.WeakValueDictionary()

    def received(self, number: int, item: Any) -> None:
        if isinstance(item, ArrowPage) and item.content is None and item.rows:
            self._waiting[number] = item

    def restore(self, held: list[tuple[int, bytes]]) -> None:
        for number, content in held:
            page = self._waiting.pop(number, None)
            if page is not None:
                page.content = content
