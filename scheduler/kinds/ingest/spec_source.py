"""The ``source:`` models of an ingest job: URL, auth, pagination, retries, timeouts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, field_validator

from scheduler.config.types import Duration, Model
from scheduler.kinds.ingest.spec_common import _dotted

# --- source -------------------------------------------------------------------------------------


class BearerAuth(Model):
    """``Authorization: Bearer <token>``; an empty token sends no header (optional auth)."""

    type: Literal["bearer"]
    token: str = ""

    @field_validator("token", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return "" if value is None else value


class ApiKeyAuth(Model):
    """An API key in a header (default ``X-API-Key``) or a query parameter (``in: query``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["api_key"]
    key: str
    name: str = "X-API-Key"
    in_: Literal["header", "query"] = Field(default="header", alias="in")


class BasicAuth(Model):
    """HTTP basic auth."""

    type: Literal["basic"]
    username: str
    password: str = ""


Auth = Annotated[Union[BearerAuth, ApiKeyAuth, BasicAuth], Field(discriminator="type")]


class PageNumberPagination(Model):
    """``?page=N&per_page=M``; stops at ``total_pages_path`` or on the first empty page."""

    type: Literal["page_number"]
    page_param: str = "page"
    size_param: str | None = "per_page"
    page_size: int = Field(default=100, ge=1, le=100_000)
    start_page: int = Field(default=1, ge=0)
    total_pages_path: str | None = None

    @field_validator("total_pages_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _dotted(value)


class OffsetPagination(Model):
    """``?offset=K&limit=M``; stops at ``total_path`` or on a short page."""

    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    page_size: int = Field(default=100, ge=1, le=100_000)
    total_path: str | None = None

    @field_validator("total_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _dotted(value)


class CursorPagination(Model):
    """Cursor read from ``cursor_path`` in the body, sent back as ``cursor_param``; stops when empty."""

    type: Literal["cursor"]
    cursor_path: str
    cursor_param: str = "cursor"
    size_param: str | None = None
    page_size: int = Field(default=100, ge=1, le=100_000)

    @field_validator("cursor_path")
    @classmethod
    def _path(cls, value: str) -> str | None:
        return _dotted(value)


class LinkHeaderPagination(Model):
    """RFC 8288 ``Link: <url>; rel="next"``; stops when there is no next link."""

    type: Literal["link_header"]
    size_param: str | None = None
    page_size: int = Field(default=100, ge=1, le=100_000)


class NextUrlPagination(Model):
    """Absolute or relative next-page URL read from ``next_url_path`` in the body."""

    type: Literal["next_url"]
    next_url_path: str
    size_param: str | None = None
    page_size: int = Field(default=100, ge=1, le=100_000)

    @field_validator("next_url_path")
    @classmethod
    def _path(cls, value: str) -> str | None:
        return _dotted(value)


class NoPagination(Model):
    """A single request."""

    type: Literal["none"]


Pagination = Annotated[
    Union[PageNumberPagination, OffsetPagination, CursorPagination, LinkHeaderPagination, NextUrlPagination, NoPagination],
    Field(discriminator="type"),
]


class Retries(Model):
    """Retry policy: 429, 5xx and read errors up to ``total`` retries (urllib3 ``Retry``); failed
    connections while the backoff waits fit in ``connect_budget`` (a source that is down fails fast)."""

    total: int = Field(default=5, ge=0, le=100)
    connect_budget: Duration = Field(default=timedelta(seconds=10), description=(
        "how long a request keeps retrying failed connections (refused, unreachable, timed out): "
        "as many attempts as the backoff waits fit in; a name that does not resolve is retried once"))
    backoff: Duration = timedelta(seconds=1)
    backoff_max: Duration = timedelta(seconds=60)
    jitter: Duration = timedelta(milliseconds=500)
    retry_after_max: Duration = timedelta(seconds=120)
    statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not (status == 429 or 500 <= status <= 599 or status == 408):
                raise ValueError(f"only 408, 429 and 5xx may be retried, not {status}")
        return value


class Source(Model):
    """Where records come from."""

    base_url: str
    path: str = ""
    method: Literal["GET"] = "GET"
    params: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    pagination: Pagination = Field(default_factory=lambda: NoPagination(type="none"))
    records: str | None = None
    max_pages: int = Field(default=10_000, ge=1)
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=60)
    deadline: Duration = timedelta(hours=1)
    retries: Retries = Field(default_factory=Retries)
    rate_limit: float | None = Field(default=None, gt=0)
    verify_tls: bool = True

    @field_validator("params", "headers", mode="before",
                     json_schema_input_type=dict[str, Union[str, int, float, bool]])
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r} (is the environment variable set?)")
        return value

    @field_validator("records")
    @classmethod
    def _records(cls, value: str | None) -> str | None:
        return _dotted(value)
