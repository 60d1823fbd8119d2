"""The ``source:`` models of an ingest job: URL, auth, pagination, retries, timeouts."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from scheduler.config.types import Duration, Model
from scheduler.kinds.ingest.spec_common import _dotted

# --- source -------------------------------------------------------------------------------------


class BearerAuth(Model):
    """``Authorization: Bearer <token>``; an empty token sends no header (optional auth)."""

    type: Literal["bearer"] = Field(description="bearer")
    token: str = Field(default="", description="Bearer token (a secret); empty sends no header.")

    @field_validator("token", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return "" if value is None else value


class ApiKeyAuth(Model):
    """An API key in a header (default ``X-API-Key``) or a query parameter (``in: query``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["api_key"] = Field(description="api_key")
    key: str = Field(description="The API key (a secret).")
    name: str = Field(default="X-API-Key", description="Header or query parameter name.")
    in_: Literal["header", "query"] = Field(
        default="header", alias="in", description="Where the key goes: header or query.")


class BasicAuth(Model):
    """HTTP basic auth."""

    type: Literal["basic"] = Field(description="basic")
    username: str = Field(description="Basic auth user name.")
    password: str = Field(default="", description="Basic auth password (a secret).")


Auth = Annotated[BearerAuth | ApiKeyAuth | BasicAuth, Field(discriminator="type")]


class PageNumberPagination(Model):
    """``?page=N&per_page=M``; stops at ``total_pages_path`` or on the first empty page."""

    type: Literal["page_number"] = Field(description="page_number: ?page=N&per_page=M")
    page_param: str = Field(default="page", description="Page number parameter.")
    size_param: str | None = Field(default="per_page", description="Page size parameter (null: none sent).")
    page_size: int = Field(default=100, ge=1, le=100_000, description="Records per page.")
    start_page: int = Field(default=1, ge=0, description="First page number.")
    total_pages_path: str | None = Field(
        default=None, description="Dotted path of the page count in the body; without it, stop on an empty page.")

    @field_validator("total_pages_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _dotted(value)


class OffsetPagination(Model):
    """``?offset=K&limit=M``; stops at ``total_path`` or on a short page."""

    type: Literal["offset"] = Field(description="offset: ?offset=K&limit=M")
    offset_param: str = Field(default="offset", description="Offset parameter.")
    limit_param: str = Field(default="limit", description="Limit parameter.")
    page_size: int = Field(default=100, ge=1, le=100_000, description="Records per page.")
    total_path: str | None = Field(
        default=None, description="Dotted path of the record count in the body; without it, stop on a short page.")

    @field_validator("total_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return _dotted(value)


class CursorPagination(Model):
    """Cursor read from ``cursor_path`` in the body, sent back as ``cursor_param``; stops when empty."""

    type: Literal["cursor"] = Field(description="cursor: a cursor read from the body and sent back")
    cursor_path: str = Field(description="Dotted path of the next cursor in the body.")
    cursor_param: str = Field(default="cursor", description="Parameter the cursor is sent back in.")
    size_param: str | None = Field(default=None, description="Page size parameter (null: none sent).")
    page_size: int = Field(default=100, ge=1, le=100_000, description="Records per page.")

    @field_validator("cursor_path")
    @classmethod
    def _path(cls, value: str) -> str | None:
        return _dotted(value)


class LinkHeaderPagination(Model):
    """RFC 8288 ``Link: <url>; rel="next"``; stops when there is no next link."""

    type: Literal["link_header"] = Field(description="link_header: follow Link rel=next")
    size_param: str | None = Field(default=None, description="Page size parameter (null: none sent).")
    page_size: int = Field(default=100, ge=1, le=100_000, description="Records per page.")


class NextUrlPagination(Model):
    """Absolute or relative next-page URL read from ``next_url_path`` in the body."""

    type: Literal["next_url"] = Field(description="next_url: the next page's URL read from the body")
    next_url_path: str = Field(description="Dotted path of the next-page URL in the body.")
    size_param: str | None = Field(default=None, description="Page size parameter (null: none sent).")
    page_size: int = Field(default=100, ge=1, le=100_000, description="Records per page.")

    @field_validator("next_url_path")
    @classmethod
    def _path(cls, value: str) -> str | None:
        return _dotted(value)


class NoPagination(Model):
    """A single request."""

    type: Literal["none"] = Field(description="none: a single request")


Pagination = Annotated[
    PageNumberPagination | OffsetPagination | CursorPagination | LinkHeaderPagination | NextUrlPagination
    | NoPagination,
    Field(discriminator="type"),
]


class Retries(Model):
    """Retry policy: 429, 5xx and read errors up to ``total`` retries (urllib3 ``Retry``); failed
    connections while the backoff waits fit in ``connect_budget`` (a source that is down fails fast)."""

    total: int = Field(default=5, ge=0, le=100, description="Retries on 'statuses' and connection or read errors.")
    connect_budget: Duration = Field(default=timedelta(seconds=10), description=(
        "how long a request keeps retrying failed connections (refused, unreachable, timed out): "
        "as many attempts as the backoff waits fit in; a name that does not resolve is retried once"))
    backoff: Duration = Field(default=timedelta(seconds=1), description="First backoff; exponential.")
    backoff_max: Duration = Field(default=timedelta(seconds=60), description="Cap of the backoff.")
    jitter: Duration = Field(
        default=timedelta(milliseconds=500), description="Random extra wait per retry, up to this.")
    retry_after_max: Duration = Field(default=timedelta(seconds=120), description="Cap on an honoured Retry-After.")
    statuses: tuple[int, ...] = Field(
        default=(429, 500, 502, 503, 504), description="Statuses to retry (408, 429 or 5xx only).")

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not (status == 429 or 500 <= status <= 599 or status == 408):
                raise ValueError(f"only 408, 429 and 5xx may be retried, not {status}")
        return value


class Source(Model):
    """Where records come from."""

    base_url: str = Field(description="API root, an http(s) URL.")
    path: str = Field(default="", description="Path appended to base_url; templated.")
    method: Literal["GET"] = Field(default="GET", description="HTTP method (reads only).")
    params: dict[str, str] = Field(
        default_factory=dict,
        description="Query parameters; templated with {logical_date}, {data_interval_start}, {data_interval_end}, "
                    "{watermark}, {job}, {run_id} and job params.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers; templated.")
    auth: Auth | None = Field(default=None, description="Authentication: bearer, api_key or basic.")
    pagination: Pagination = Field(
        default_factory=lambda: NoPagination(type="none"), description="Pagination style (default: a single request).")
    records: str | None = Field(
        default=None, description="Dotted path of the records in the body (a body that is a list is the records).")
    max_pages: int = Field(default=10_000, ge=1, description="Guard: more pages fails the run.")
    connect_timeout: Duration = Field(default=timedelta(seconds=10), description="Socket connect timeout.")
    read_timeout: Duration = Field(default=timedelta(seconds=60), description="Socket read timeout.")
    deadline: Duration = Field(
        default=timedelta(hours=1),
        description="Overall fetch deadline, covering retries, rate-limit waits and slow bodies.")
    retries: Retries = Field(default_factory=Retries, description="Retry policy for 429, 5xx and connection errors.")
    rate_limit: float | None = Field(
        default=None, gt=0, description="At most this many requests per second, retries included.")
    verify_tls: bool = Field(default=True, description="TLS certificate verification.")

    @field_validator("params", "headers", mode="before",
                     json_schema_input_type=dict[str, str | int | float | bool])
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
