"""The ``ingest`` job spec: checks, Parquet sink, incremental, and the job model itself.

The ``source:`` models live in ``spec_source``, the ``transform:`` steps in ``spec_transform``;
both are re-exported here, so ``scheduler.kinds.ingest.spec`` stays the one place to import from.

Invariants: a loaded :class:`IngestJob` is frozen; every template placeholder is known; every
expression parses under the safe grammar of :mod:`scheduler.kinds.ingest.expr`; the sink dataset
is a relative path that stays under the data dir.  This module imports only pydantic, the
standard library and ``scheduler.config`` (plus the stdlib-only expression parser) so the daemon
can load specs without pandas, pyarrow or requests.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from scheduler.config.jobs import JobBase
from scheduler.config.types import Model, TimezoneName
from scheduler.kinds.ingest.spec_common import TEMPLATE_VARS, _placeholders, _type_name
from scheduler.kinds.ingest.spec_source import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OffsetPagination,
    PageNumberPagination,
    Pagination,
    Retries,
    Source,
)
from scheduler.kinds.ingest.spec_transform import (
    CastSpec,
    CastStep,
    DedupeSpec,
    DedupeStep,
    DeriveStep,
    FilterSpec,
    FilterStep,
    FlattenStep,
    HookStep,
    LowerStep,
    ParseNumberStep,
    RenameStep,
    SelectStep,
    Step,
    StripStep,
    UpperStep,
)

# the models of the spec, those of spec_source and spec_transform re-exported
__all__ = [
    "ApiKeyAuth", "Auth", "BasicAuth", "BearerAuth", "CastSpec", "CastStep", "Checks", "CursorPagination",
    "DedupeSpec", "DedupeStep", "DeriveStep", "FilterSpec", "FilterStep", "FlattenStep", "HookStep", "Incremental",
    "IngestJob", "LinkHeaderPagination", "LowerStep", "NextUrlPagination", "NoPagination", "OffsetPagination",
    "PageNumberPagination", "Pagination", "ParseNumberStep", "Range", "RenameStep", "Retries", "SelectStep", "Sink",
    "Source", "Step", "StripStep", "UpperStep",
]

# --- checks, sink, incremental ------------------------------------------------------------------


class Range(Model):
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")


class Checks(Model):
    """Gates evaluated over the rows of this run before anything is published."""

    min_rows: int = Field(default=0, ge=0, description="At least this many output rows.")
    not_null: tuple[str, ...] = Field(default=(), description="Columns that must have no nulls.")
    unique: tuple[str, ...] = Field(default=(), description="Columns whose values must be unique.")
    ranges: dict[str, Range] = Field(default_factory=dict, description="Numeric bounds per column: {col: {min, max}}.")
    max_reject_ratio: float | None = Field(
        default=None, ge=0, le=1, description="Fail when rejected / fetched is above this.")


class Sink(Model):
    """A hive-partitioned Parquet dataset under the data dir."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str = Field(description="Dataset path under the data dir (relative, staying inside it).")
    rejects: str | None = Field(default=None, description="Rejects dataset (default: <dataset>_rejects).")
    schema_: dict[str, str] = Field(
        alias="schema", min_length=1,
        description="Ordered map column -> type (int, float, decimal(p,s), string, bool, timestamp, date): the exact "
                    "output schema.")
    partition_by: str | None = Field(
        default=None, description="Partition by this timestamp or date column instead of the logical date.")
    partition_timezone: TimezoneName = Field(default="UTC", description="Timezone partition_by dates are taken in.")
    mode: Literal["replace_partition", "append", "merge"] = Field(
        default="replace_partition",
        description="replace_partition (idempotent reruns), append, or merge rows by merge_key.")
    merge_key: tuple[str, ...] = Field(default=(), description="Key columns for mode merge.")
    compression_level: int | None = Field(default=None, ge=1, le=22, description="zstd level (default: zstd's).")
    row_group_size: int = Field(default=100_000, ge=1_000, le=10_000_000, description="Rows per Parquet row group.")
    batch_rows: int = Field(
        default=10_000, ge=100, le=1_000_000, description="Raw records transformed per batch (bounds memory).")

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
    def _consistent(self) -> Sink:
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

    cursor_field: str = Field(description="Column whose maximum becomes the watermark.")
    initial: str = Field(default="", description="{watermark} before the first successful run.")


class IngestJob(JobBase):
    """Fetch an HTTP API page by page, clean, check and publish a Parquet partition."""

    kind: Literal["ingest"] = Field(description="ingest: fetch an HTTP API into Parquet under the data dir.")
    source: Source = Field(description="The HTTP API to fetch.")
    transform: tuple[Step, ...] = Field(
        default=(),
        description="Cleaning steps, applied in order one batch at a time; each step is a mapping with one key.")
    checks: Checks = Field(
        default_factory=Checks, description="Gates over the run's rows; a failed check publishes nothing.")
    sink: Sink = Field(description="The Parquet dataset under the data dir.")
    incremental: Incremental | None = Field(
        default=None, description="Watermark: the maximum of cursor_field over published rows becomes {watermark}.")

    @field_validator("transform")
    @classmethod
    def _one_dedupe(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if sum(isinstance(step, DedupeStep) for step in value) > 1:
            raise ValueError("at most one 'dedupe' step")
        return value

    @model_validator(mode="after")
    def _templates(self) -> IngestJob:
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
