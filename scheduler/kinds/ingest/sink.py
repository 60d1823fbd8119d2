"""Atomic, hive-partitioned Parquet publishing: ``<data dir>/<dataset>/date=YYYY-MM-DD/part-*.parquet``.

Invariants:
- Everything is first written to hidden temp paths inside the dataset (``.part.tmp-<host>-<pid>-<hex>``
  in an existing partition, or a hidden ``.date=...tmp-<host>-<pid>-<hex>`` directory for a new one);
  readers (pyarrow, Spark, DuckDB) skip names starting with ``.``.
- A file is fsynced before its rename and the directory after it.  An existing partition is
  replaced by renaming one file over ``part-00000.parquet``; a new partition appears by renaming
  its directory, so it is never seen empty or half written.
- Temp files left by a killed run are removed by the next writer (see :func:`clean_stale`); a
  live writer's temp files are never removed, even from another container on the same volume.
- Memory is bounded by ``row_group_size`` rows of Arrow data per open partition.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scheduler.errors import JobFailed
from scheduler.kinds.ingest.columns import FLOAT64, OBJECT, Batch
from scheduler.kinds.ingest.keys import KeySet, WinnerIndex, digests
from scheduler.process import host_tag, pid_alive

FINAL = "part-00000.parquet"
# ``.part.tmp-<host>-<pid>-<hex>[.2]`` or ``.date=<day>.tmp-<host>-<pid>-<hex>``; names written by
# earlier versions have no ``<host>-``.
_TMP = re.compile(r"^\.(?:part|date=[0-9-]+)\.tmp-(?:([A-Za-z0-9_]+)-)?(\d+)-[0-9a-f]+")
STALE_AFTER = 6 * 3600.0  # seconds without a change before another host's temp files count as abandoned
_DECIMAL = re.compile(r"^decimal(?:\((\d+),(\d+)\))?$")


class SchemaError(JobFailed):
    """The transformed data does not match the declared output schema."""


def arrow_type(name: str) -> pa.DataType:
    simple = {"int": pa.int64(), "float": pa.float64(), "string": pa.string(), "bool": pa.bool_(),
              "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32()}
    if name in simple:
        return simple[name]
    m = _DECIMAL.match(name)
    assert m, name
    return pa.decimal128(int(m.group(1) or 18), int(m.group(2) or 2))


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    return pa.schema([pa.field(n, arrow_type(t)) for n, t in columns.items()])


REJECTS_SCHEMA = pa.schema([("reason", pa.string()), ("step", pa.string()), ("record", pa.string())])


def _fits(dtype: Any, target: pa.DataType) -> bool:
    """Whether a column of pandas ``dtype`` may be written as ``target`` (else: add a cast step)."""
    return (
        (pa.types.is_integer(target) and pd.api.types.is_integer_dtype(dtype))
        or (pa.types.is_floating(target) and pd.api.types.is_numeric_dtype(dtype)
            and not pd.api.types.is_bool_dtype(dtype))
        or (pa.types.is_string(target) and (pd.api.types.is_string_dtype(dtype) or dtype == OBJECT))
        or (pa.types.is_boolean(target) and pd.api.types.is_bool_dtype(dtype))
        or (pa.types.is_timestamp(target) and isinstance(dtype, pd.DatetimeTZDtype))
        or (pa.types.is_date(target) and pd.api.types.is_datetime64_dtype(dtype))
        or (pa.types.is_decimal(target) and (isinstance(dtype, pd.ArrowDtype) or dtype == OBJECT))
    )


def _column(col: pd.Series, target: pa.DataType, name: str) -> pa.Array:
    dtype = col.dtype
    if col.isna().all():
        return pa.nulls(len(col), target)
    if not _fits(dtype, target):
        raise SchemaError(f"column {name!r} has type {dtype}, the schema says {target}: add a cast step")
    try:
        if isinstance(dtype, pd.ArrowDtype):
            array = pa.array(col.array)
        else:
            array = pa.array(col, from_pandas=True)
        return array.cast(target, safe=not pa.types.is_timestamp(target))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"column {name!r} does not fit {target}: {exc}") from None


def to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of exactly ``schema`` (names, order, types) or :class:`SchemaError`."""
    names = list(schema.names)
    missing = [n for n in names if n not in frame.columns]
    extra = [c for c in frame.columns if c not in names]
    if missing or extra:
        raise SchemaError(
            "output columns differ from the schema: "
            + (f"missing {missing} " if missing else "") + (f"unexpected {extra} (add a select step)" if extra else "")
        )
    return pa.Table.from_arrays([_column(frame[f.name], f.type, f.name) for f in schema], schema=schema)


def batch_table(batch: Batch, schema: pa.Schema) -> pa.Table:
    """:func:`to_table` for an Arrow :class:`Batch`: the same checks and messages, no pandas."""
    names = list(schema.names)
    missing = [n for n in names if n not in batch.columns]
    extra = [c for c in batch.columns if c not in names]
    if missing or extra:
        raise SchemaError(
            "output columns differ from the schema: "
            + (f"missing {missing} " if missing else "") + (f"unexpected {extra} (add a select step)" if extra else "")
        )
    arrays = []
    for f in schema:
        col = batch.columns[f.name]
        data = col.data
        if not isinstance(data, pa.Array):
            arrays.append(_column(batch.series(f.name), f.type, f.name))
            continue
        if data.null_count == len(data) or (pa.types.is_floating(data.type) and data.null_count == 0 and len(data)
                                            and pc.all(pc.is_nan(data)).as_py()):
            arrays.append(pa.nulls(len(data), f.type))
            continue
        if not _fits(col.dtype, f.type):
            raise SchemaError(f"column {f.name!r} has type {col.dtype}, the schema says {f.type}: add a cast step")
        if col.dtype == FLOAT64 and pa.types.is_floating(data.type) and pc.any(pc.is_nan(data)).as_py():
            data = pc.if_else(pc.is_nan(data), pa.scalar(None, data.type), data)  # NaN is null there, as in pandas
        try:
            arrays.append(data.cast(f.type, safe=not pa.types.is_timestamp(f.type)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise SchemaError(f"column {f.name!r} does not fit {f.type}: {exc}") from None
    return pa.Table.from_arrays(arrays, schema=schema)


DICTIONARY_SAMPLE = 20_000  # rows whose distinct values choose a file's dictionary columns


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns worth dictionary encoding: at most one distinct value per two rows among the
    first :data:`DICTIONARY_SAMPLE` rows.  A column of mostly distinct values (ids, times,
    prices) is smaller and much faster to write plain: its dictionary would hold every value
    again and be dropped by the writer once it outgrows its page.  The values read back are the
    same either way."""
    sample = table.slice(0, DICTIONARY_SAMPLE)
    chosen = []
    for name in table.column_names:
        try:
            distinct = pc.count_distinct(sample.column(name), mode="all").as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            distinct = 0  # a type the kernel does not count: the writer's default, a dictionary
        if distinct * 2 <= max(sample.num_rows, 1):
            chosen.append(name)
    return chosen


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    # this process's own pid: an earlier run in this process, abandoned
    return pid != os.getpid() and pid_alive(pid)


def _last_change(path: Path) -> float:
    """The newest mtime of ``path`` and, for a directory, of its entries (the file being written)."""
    try:
        newest = path.stat().st_mtime
        if path.is_dir():
            for entry in path.iterdir():
                newest = max(newest, entry.stat().st_mtime)
    except FileNotFoundError:
        return time.time()  # it vanished meanwhile: its writer finished or someone cleaned it
    return newest


def clean_stale(dataset_dir: Path, stale_after: float = STALE_AFTER) -> int:
    """Remove temp files and directories left by writers that are gone; returns how many.

    A temp name carries the writer's host name and pid.  Pids only mean something within one pid
    namespace, and a container (the daemon, or a ``docker compose run ... run-job`` next to it on
    the same volume) has a pid namespace and, by default, a host name of its own.  So:

    - a temp path of this host is stale when its pid is not alive (or is this process: an earlier
      run in it was abandoned);
    - a temp path of another host is stale when nothing in it changed for ``stale_after`` seconds
      (callers pass the larger of :data:`STALE_AFTER`, 6 h, and the source deadline, the longest a
      live writer may go without writing);
    - a name without a host (written before host names were recorded) counts as this host's.

    Two containers given the same host name must therefore share a pid namespace.
    """
    removed = 0
    if not dataset_dir.is_dir():
        return 0
    here = host_tag()
    candidates = [p for p in dataset_dir.iterdir()]
    candidates += [q for p in dataset_dir.iterdir() if p.is_dir() and p.name.startswith("date=") for q in p.iterdir()]
    for path in candidates:
        m = _TMP.match(path.name)
        if not m:
            continue
        host, pid = m.group(1), int(m.group(2))
        if host is None or host == here:
            stale = not _pid_alive(pid)
        else:
            stale = time.time() - _last_change(path) > stale_after
        if stale:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass
class _Part:
    """One partition being written: its temp file, buffered batches and provenance."""

    name: str
    final_dir: Path
    temp_path: Path
    new_dir: Path | None  # the hidden directory to rename in, for a partition that did not exist
    writer: pq.ParquetWriter | None = None
    buffered: list[pa.Table] = field(default_factory=list)
    buffered_rows: int = 0
    rows: int = 0
    runs: list[tuple[int, int]] = field(default_factory=list)  # (batch number, rows) in write order
    keys: KeySet | None = None
    dictionary: list[str] | None = None  # columns written dictionary-encoded, chosen at the first write


class DatasetWriter:
    """Writes one dataset for one run; nothing is visible before :meth:`publish`."""

    def __init__(self, root: Path, dataset: str, schema: pa.Schema, mode: str, *, merge_key: tuple[str, ...] = (),
                 row_group_size: int = 100_000, compression_level: int | None = None, run_tag: str = "",
                 stale_after: float = STALE_AFTER) -> None:
        self.dir = root / dataset
        self.schema, self.mode, self.merge_key = schema, mode, merge_key
        self.row_group_size, self.compression_level = row_group_size, compression_level
        self.tag = f"{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.run_tag = run_tag
        self.parts: dict[str, _Part] = {}
        self.bytes = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stale_removed = clean_stale(self.dir, stale_after)

    def _part(self, name: str) -> _Part:
        part = self.parts.get(name)
        if part is None:
            final_dir = self.dir / f"date={name}"
            if final_dir.is_dir():
                part = _Part(name, final_dir, final_dir / f".part.tmp-{self.tag}", None)
            else:
                new_dir = self.dir / f".date={name}.tmp-{self.tag}"
                new_dir.mkdir()
                part = _Part(name, final_dir, new_dir / FINAL, new_dir)
            if self.mode == "merge":
                part.keys = KeySet()
            self.parts[name] = part
        return part

    def _open(self, part: _Part, path: Path, first: pa.Table | None = None) -> pq.ParquetWriter:
        """A writer for ``path``; the first rows of the part (``first``) choose its dictionary columns."""
        if part.dictionary is None and first is not None:
            part.dictionary = dictionary_columns(first)
        dictionary: bool | list[str] = part.dictionary if part.dictionary is not None else True
        return pq.ParquetWriter(path, self.schema, compression="zstd", compression_level=self.compression_level,
                                write_statistics=True, use_dictionary=dictionary)

    def write(self, name: str, table: pa.Table, batch: int) -> None:
        """Buffer ``table`` for partition ``name``; full row groups go to the temp file."""
        part = self._part(name)
        if part.runs and part.runs[-1][0] == batch:
            part.runs[-1] = (batch, part.runs[-1][1] + table.num_rows)
        else:
            part.runs.append((batch, table.num_rows))
        if part.keys is not None and table.num_rows:
            part.keys.add(digests(table.select(list(self.merge_key)), self.merge_key))
        part.buffered.append(table)
        part.buffered_rows += table.num_rows
        part.rows += table.num_rows
        if part.buffered_rows >= self.row_group_size:
            self._flush(part, final=False)

    def ensure(self, name: str) -> None:
        """Make sure partition ``name`` is written even with no rows (an empty file replaces old data)."""
        self._part(name)

    def _flush(self, part: _Part, final: bool) -> None:
        if not part.buffered:
            if part.writer is None:
                part.writer = self._open(part, part.temp_path)
            return
        table = pa.concat_tables(part.buffered)
        if part.writer is None:
            part.writer = self._open(part, part.temp_path, table)
        part.buffered, part.buffered_rows = [], 0
        if not final:  # keep the remainder buffered so row groups stay full
            full = (table.num_rows // self.row_group_size) * self.row_group_size
            if full < table.num_rows:
                part.buffered, part.buffered_rows = [table.slice(full)], table.num_rows - full
            table = table.slice(0, full)
        part.writer.write_table(table, row_group_size=self.row_group_size)

    def _rows(self, path: Path) -> Iterator[pa.RecordBatch]:
        yield from pq.ParquetFile(path).iter_batches(batch_size=min(self.row_group_size, 65_536))

    def finish(self, winners: WinnerIndex | None = None, dedupe_key: tuple[str, ...] = (),
               observe: Callable[[pa.Table], None] | None = None, on_rewrite: Callable[[], None] | None = None) -> int:
        """Close temp files; drop rows superseded by a later winner and merge old rows; returns rows dropped.

        ``observe`` sees the final new rows again when a rewrite pass happens (after ``on_rewrite``).
        """
        for part in self.parts.values():
            self._flush(part, final=True)
            assert part.writer is not None
            part.writer.close()
        rewrite = winners is not None and bool(winners.conflicts)
        if rewrite and on_rewrite:
            on_rewrite()
        dropped = 0
        conflicts = np.fromiter(winners.conflicts, dtype=np.uint64) if rewrite and winners else np.empty(0, np.uint64)
        conflicts.sort()
        for part in self.parts.values():
            olds = self._existing(part) if self.mode == "merge" else []
            if not rewrite and not olds:
                continue
            second = part.temp_path.with_name(f".part.tmp-{self.tag}.2")
            with self._open(part, second) as writer:
                if rewrite:
                    assert winners is not None
                    batch_numbers = np.repeat([b for b, _ in part.runs], [n for _, n in part.runs])
                    offset = 0
                    for rb in self._rows(part.temp_path):
                        table = pa.Table.from_batches([rb])
                        n = table.num_rows
                        batch_of_row = batch_numbers[offset:offset + n]
                        offset += n
                        probe = digests(table.select(list(dedupe_key)), dedupe_key)
                        pos = np.searchsorted(conflicts, probe)
                        contested = (pos < len(conflicts)) & (conflicts[np.minimum(pos, len(conflicts) - 1)] == probe)
                        keep = ~contested | (winners.winner_batch(probe) == batch_of_row)
                        dropped += int((~keep).sum())
                        table = table.filter(pa.array(keep))
                        if observe:
                            observe(table)
                        writer.write_table(table, row_group_size=self.row_group_size)
                else:
                    for rb in self._rows(part.temp_path):
                        writer.write_table(pa.Table.from_batches([rb]), row_group_size=self.row_group_size)
                for old in olds:  # merge: old rows whose key did not arrive again
                    assert part.keys is not None
                    for rb in self._rows(old):
                        table = pa.Table.from_batches([rb])
                        try:
                            table = table.select(self.schema.names).cast(self.schema)
                        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                            raise SchemaError(f"existing file {old} does not match the schema: {exc}") from None
                        old_keys = digests(table.select(list(self.merge_key)), self.merge_key)
                        keep = ~part.keys.contains(old_keys)
                        writer.write_table(table.filter(pa.array(keep)), row_group_size=self.row_group_size)
            os.replace(second, part.temp_path)
        return dropped

    def _existing(self, part: _Part) -> list[Path]:
        return sorted(part.final_dir.glob("part-*.parquet")) if part.final_dir.is_dir() else []

    def publish(self) -> list[Path]:
        """Rename every partition into place (one rename each); returns the published files."""
        published: list[Path] = []
        for part in self.parts.values():
            fsync_path(part.temp_path)
            self.bytes += part.temp_path.stat().st_size
            if self.mode == "append":
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                final = part.final_dir / f"part-{stamp}-{self.run_tag}{secrets.token_hex(4)}.parquet"
            else:
                final = part.final_dir / FINAL
            if part.new_dir is not None:
                if part.temp_path.name != final.name:
                    os.rename(part.temp_path, part.new_dir / final.name)
                fsync_path(part.new_dir)
                try:
                    os.rename(part.new_dir, part.final_dir)
                except OSError:  # the partition appeared meanwhile: move the file in instead
                    os.replace(part.new_dir / final.name, final)
                    shutil.rmtree(part.new_dir, ignore_errors=True)
                    fsync_path(part.final_dir)
            else:
                os.replace(part.temp_path, final)
                fsync_path(part.final_dir)
                if self.mode != "append":  # files from earlier append runs are now merged or replaced
                    for other in part.final_dir.glob("part-*.parquet"):
                        if other != final:
                            other.unlink(missing_ok=True)
            published.append(final)
        fsync_path(self.dir)
        return published

    def abort(self) -> None:
        """Remove every temp file and directory of this run; nothing was published."""
        for part in self.parts.values():
            if part.writer is not None:
                try:
                    part.writer.close()
                except Exception:  # already failing; the file is deleted anyway
                    pass
            if part.new_dir is not None:
                shutil.rmtree(part.new_dir, ignore_errors=True)
            else:
                for leftover in part.final_dir.glob(f".part.tmp-{self.tag}*"):
                    leftover.unlink(missing_ok=True)
        self.parts.clear()


def partition_names(values: Any, tz: str) -> pd.Series:
    """``YYYY-MM-DD`` per row of a timestamp or date column, in timezone ``tz``."""
    col = pd.Series(values)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        col = col.dt.tz_convert(tz)
    return col.dt.strftime("%Y-%m-%d")
