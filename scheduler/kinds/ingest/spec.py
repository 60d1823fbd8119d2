"""The ``ingest`` job spec: HTTP source, transform steps, checks and Parquet sink.

Invariants: a loaded :class:`IngestJob` is frozen; every template placeholder is known; every
expression parses under the safe grammar of :mod:`scheduler.kinds.ingest.expr`; the sink dataset
is a relative path that stays under the data dir.  This module imports only pydantic, the
standard library and ``scheduler.config`` (plus the stdlib-only expression parser) so the daemon
can load specs without pandas, pyarrow or requests.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from scheduler.config.jobs import JobBase
from scheduler.config.types import Duration, FunctionRef, Model, TimezoneName
from scheduler.kinds.ingest.expr import ExpressionError, parse_expression

TEMPLATE_VARS = frozenset({"logical_date", "data_interval_start", "data_interval_end", "watermark", "job", "run_id"})
_DOTTED = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_DECIMAL = re.compile(r"^decimal(?:\((\d+),\s*(\d+)\))?$")
SCALAR_TYPES = ("int", "float", "string", "bool", "timestamp", "date")


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {text!r}: {exc}") from None


def _dotted(value: str | None) -> str | None:
    if value is not None and not _DOTTED.match(value):
        raise ValueError(f"must be a dotted path like 'data' or 'meta.total_pages', got {value!r}")
    return value


def _type_name(value: str) -> str:
    """Validate a column type name: int, float, string, bool, timestamp, date, decimal(p,s)."""
    text = value.strip().replace(" ", "")
    if text in SCALAR_TYPES or _DECIMAL.match(text):
        if (m := _DECIMAL.match(text)) and m.group(1):
            precision, scale = int(m.group(1)), int(m.group(2))
            if not (1 <= precision <= 38 and 0 <= scale <= precision):
                raise ValueError("decimal needs 1 <= precision <= 38 and 0 <= scale <= precision")
        return text
    raise ValueError(f"unknown type {value!r}; use one of {', '.join(SCALAR_TYPES)}, decimal(p,s)")


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
    """Retry policy for 429, 5xx and connection errors (urllib3 ``Retry``)."""

    total: int = Field(default=5, ge=0, le=100)
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


# --- transform ----------------------------------------------------------------------------------


class CastSpec(Model):
    """A cast target with options: timestamps take ``format`` and ``timezone`` (for naive values)."""

    type: str
    format: str | None = None
    timezone: TimezoneName | None = None
    true_values: tuple[str, ...] = ("true", "t", "yes", "y", "1")
    false_values: tuple[str, ...] = ("false", "f", "no", "n", "0")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _type_name(value)


class FlattenStep(Model):
    """Nested objects become columns: ``customer.email`` -> ``customer_email``."""

    flatten: bool | dict[str, str] = True

    def separator(self) -> str:
        return self.flatten.get("separator", "_") if isinstance(self.flatten, dict) else "_"


class RenameStep(Model):
    rename: dict[str, str]


class SelectStep(Model):
    select: tuple[str, ...]


class CastStep(Model):
    cast: dict[str, CastSpec]

    @field_validator("cast", mode="before", json_schema_input_type=dict[str, Union[str, CastSpec]])
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


class ParseNumberStep(Model):
    """Strip currency symbols, spaces and thousands separators, then parse a number."""

    parse_number: tuple[str, ...]


class LowerStep(Model):
    lower: tuple[str, ...]


class UpperStep(Model):
    upper: tuple[str, ...]


class StripStep(Model):
    strip: tuple[str, ...]


class DedupeSpec(Model):
    """Keep one row per ``columns`` value: the first or last in arrival order, or ordered by ``by``.

    (Not called ``key``: values of keys named key/token/password/secret are redacted from logs.)
    """

    columns: tuple[str, ...]
    keep: Literal["first", "last"] = "first"
    by: str | None = None

    @field_validator("columns", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DedupeStep(Model):
    dedupe: DedupeSpec


def _check_expr(value: str) -> str:
    try:
        parse_expression(value)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value


class DeriveStep(Model):
    """New columns from safe arithmetic expressions over columns and literals."""

    derive: dict[str, str]

    @field_validator("derive")
    @classmethod
    def _exprs(cls, value: dict[str, str]) -> dict[str, str]:
        for expr in value.values():
            _check_expr(expr)
        return value


class FilterSpec(Model):
    """Keep rows where ``expr`` is true; the others are rejected (or counted as filtered)."""

    expr: str
    on_fail: Literal["reject", "drop"] = "reject"

    @field_validator("expr")
    @classmethod
    def _expr(cls, value: str) -> str:
        return _check_expr(value)


class FilterStep(Model):
    filter: FilterSpec

    @field_validator("filter", mode="before", json_schema_input_type=Union[str, FilterSpec])
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"expr": value} if isinstance(value, str) else value


class HookStep(Model):
    """``module:function`` taking a DataFrame and returning a DataFrame (or ``(clean, rejects)``)."""

    hook: FunctionRef


_STEPS: dict[str, type[Model]] = {
    "flatten": FlattenStep, "rename": RenameStep, "select": SelectStep, "cast": CastStep,
    "parse_number": ParseNumberStep, "lower": LowerStep, "upper": UpperStep, "strip": StripStep,
    "dedupe": DedupeStep, "derive": DeriveStep, "filter": FilterStep, "hook": HookStep,
}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        name = next(iter(value))
        return name if name in _STEPS else None
    if isinstance(value, Model):
        return next(iter(type(value).model_fields))
    return None


Step = Annotated[
    Union[tuple(Annotated[model, Tag(name)] for name, model in _STEPS.items())],  # type: ignore[misc]
    Discriminator(
        _step_tag,
        custom_error_type="transform_step",
        custom_error_message="each step is a mapping with one key: " + ", ".join(_STEPS),
    ),
]


# --- checks, sink, incremental ------------------------------------------------------------------


class Range(Model):
    min: float | None = None
    max: float | None = None


class Checks(Model):
    """Gates evaluated over the rows of this run before anything is published."""

    min_rows: int = Field(default=0, ge=0)
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: dict[str, Range] = Field(default_factory=dict)
    max_reject_ratio: float | None = Field(default=None, ge=0, le=1)


class Sink(Model):
    """A hive-partitioned Parquet dataset under the data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str
    rejects: str | None = None
    schema_: dict[str, str] = Field(alias="schema", min_length=1)
    partition_by: str | None = None
    partition_timezone: TimezoneName = "UTC"
    mode: Literal["replace_partition", "append", "merge"] = "replace_partition"
    merge_key: tuple[str, ...] = ()
    compression_level: int | None = Field(default=None, ge=1, le=22)
    row_group_size: int = Field(default=100_000, ge=1_000, le=10_000_000)
    batch_rows: int = Field(default=10_000, ge=100, le=1_000_000)

    @field_validator("dataset", "rejects")
    @classmethod
    def _inside_data_dir(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if not value.strip() or path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError(f"must be a relative path inside the data dir, got {value!r}")
        if any(part.startswith((".", "_")) or "=" in part for part in path.parts):
            raise ValueError(f"path parts must not start with '.' or '_' or contain '=', got {value!r}")
        return str(path)

    @field_validator("schema_")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: _type_name(kind) for name, kind in value.items()}

    @field_validator("merge_key", mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> "Sink":
        if self.mode == "merge" and not self.merge_key:
            raise ValueError("mode 'merge' needs 'merge_key'")
        if self.rejects is not None and self.rejects == self.dataset:
            raise ValueError("'rejects' must differ from 'dataset'")
        if self.partition_by and self.partition_by not in self.schema_:
            raise ValueError(f"partition_by column {self.partition_by!r} is not in 'schema'")
        return self

    @property
    def rejects_dataset(self) -> str:
        return self.rejects or f"{self.dataset}_rejects"


class Incremental(Model):
    """The maximum of ``cursor_field`` over published rows becomes the next ``{watermark}``."""

    cursor_field: str
    initial: str = ""


class IngestJob(JobBase):
    """Fetch an HTTP API page by page, clean, check and publish a Parquet partition."""

    kind: Literal["ingest"]
    source: Source
    transform: tuple[Step, ...] = ()
    checks: Checks = Field(default_factory=Checks)
    sink: Sink
    incremental: Incremental | None = None

    @field_validator("transform")
    @classmethod
    def _one_dedupe(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if sum(isinstance(step, DedupeStep) for step in value) > 1:
            raise ValueError("at most one 'dedupe' step")
        return value

    @model_validator(mode="after")
    def _templates(self) -> "IngestJob":
        known = TEMPLATE_VARS | set(self.params)
        texts = [self.source.path, *self.source.params.values(), *self.source.headers.values()]
        for text in texts:
            unknown = _placeholders(text) - known
            if unknown:
                raise ValueError(
                    f"unknown placeholder {{{sorted(unknown)[0]}}} in {text!r}; known: {', '.join(sorted(known))}"
                )
        if self.sink.mode == "merge":
            missing = set(self.sink.merge_key) - set(self.sink.schema_)
            if missing:
                raise ValueError(f"merge_key column(s) {sorted(missing)} not in sink schema")
        return self
