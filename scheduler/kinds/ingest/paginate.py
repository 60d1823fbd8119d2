"""Which request comes next: page number, offset/limit, body cursor, ``Link`` header, next URL.

Invariants: a paginator never yields the same cursor or URL twice (that raises
:class:`PaginationLoop`); it stops on an empty page for every strategy, so a server that keeps
answering with no records cannot keep a run alive; ``max_pages`` is enforced by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from scheduler.kinds.ingest.http import FetchError, Page
from scheduler.kinds.ingest.spec import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OffsetPagination,
    PageNumberPagination,
    Pagination,
)


class PaginationLoop(FetchError):
    """The server handed back a cursor or URL it had already handed out."""


@dataclass(frozen=True)
class Request:
    """The next request: an absolute ``url`` and query ``params`` (``None``: the URL carries them)."""

    url: str
    params: dict[str, str] | None


def dig(body: Any, path: str | None) -> Any:
    """Value at a dotted ``path`` in a JSON body (``None`` when a step is missing)."""
    if path is None:
        return body
    value = body
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def extract_records(body: Any, path: str | None) -> list[Any]:
    """The records of a page: the list at ``path``, or the body itself when it is a list."""
    if path is None and isinstance(body, list):
        return body
    if path is None:
        raise FetchError("the response body is an object, not a list: set 'records' to the path of the records")
    value = dig(body, path)
    if value is None:
        if isinstance(body, Mapping) and path.split(".")[0] not in body:
            raise FetchError(f"records path {path!r} not found in the response (keys: {sorted(body)[:10]})")
        return []
    if not isinstance(value, list):
        raise FetchError(f"records path {path!r} holds a {type(value).__name__}, not a list")
    return value


def _int_at(body: Any, path: str, what: str) -> int:
    value = dig(body, path)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FetchError(f"{what} path {path!r} holds {value!r}, not an integer") from None


class Paginator:
    """Produces the first request, then the next one from each page until ``None``."""

    def __init__(self, spec: Pagination, url: str, params: dict[str, str], page_size: int | None = None) -> None:
        self.spec, self.url, self.params = spec, url, dict(params)
        self.page_size = page_size or getattr(spec, "page_size", None)
        self._seen: set[str] = set()
        self._position = 0

    def first(self) -> Request:
        spec, params = self.spec, dict(self.params)
        size_param = getattr(spec, "size_param", None)
        if size_param and self.page_size:
            params[size_param] = str(self.page_size)
        if isinstance(spec, PageNumberPagination):
            self._position = spec.start_page
            params[spec.page_param] = str(self._position)
        elif isinstance(spec, OffsetPagination):
            params[spec.offset_param], params[spec.limit_param] = "0", str(self.page_size)
        self._base = params
        return Request(self.url, params)

    def next(self, page: Page, n_records: int) -> Request | None:
        spec = self.spec
        if isinstance(spec, NoPagination) or n_records == 0:
            return None
        if isinstance(spec, PageNumberPagination):
            if spec.total_pages_path is not None:
                total = _int_at(page.body, spec.total_pages_path, "total_pages")
                if self._position - spec.start_page + 1 >= total:
                    return None
            self._position += 1
            return Request(self.url, {**self._base, spec.page_param: str(self._position)})
        if isinstance(spec, OffsetPagination):
            assert self.page_size is not None
            self._position += n_records
            if spec.total_path is not None:
                if self._position >= _int_at(page.body, spec.total_path, "total"):
                    return None
            elif n_records < self.page_size:
                return None
            return Request(self.url, {**self._base, spec.offset_param: str(self._position)})
        if isinstance(spec, CursorPagination):
            cursor = dig(page.body, spec.cursor_path)
            if cursor is None or cursor == "":
                return None
            self._remember(f"cursor:{cursor}", f"cursor {cursor!r}")
            return Request(self.url, {**self._base, spec.cursor_param: str(cursor)})
        if isinstance(spec, LinkHeaderPagination):
            target = page.links.get("next", {}).get("url")
            return self._follow(page.url, target)
        if isinstance(spec, NextUrlPagination):
            target = dig(page.body, spec.next_url_path)
            if target is not None and not isinstance(target, str):
                raise FetchError(f"next_url_path {spec.next_url_path!r} holds {type(target).__name__}, not a URL")
            return self._follow(page.url, target)
        raise AssertionError(f"unknown pagination {spec!r}")

    def _follow(self, current: str, target: str | None) -> Request | None:
        if not target:
            return None
        url = urljoin(current, target)
        self._seen.add(f"url:{current}")
        self._remember(f"url:{url}", "next URL")
        return Request(url, None)

    def _remember(self, token: str, what: str) -> None:
        if token in self._seen:
            raise PaginationLoop(f"pagination loop: the server repeated a {what} after {len(self._seen)} pages")
        self._seen.add(token)
