"""Parquet encoding benchmark: the sink's dictionary choice against the writer's default.

The table is real output: one untimed ``scheduler run-job daily_sales`` (the shipped config minus
its rate limit, as in ``ingest_bench.py``) against the memory-served sample API writes a day's
partition, which is read back. That table is then written again and again to an in-memory file
with the sink's settings (zstd, statistics, row groups of the shipped size) and either the
writer's default (every column dictionary-encoded, dropped per column chunk once the dictionary
outgrows its page) or the sink's choice (:func:`scheduler.kinds.ingest.sink.dictionary_columns`),
interleaved; each figure is the fastest of ``--rounds`` writes (CPU seconds), with the file size.
The two files hold the same values (checked)::

    python bench/parquet_bench.py --records 200000 --rounds 9
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_bench import DAY, bench_config, start_api  # noqa: E402 - after the path set-up above

from scheduler.kinds.ingest.sink import dictionary_columns  # noqa: E402


def written(table: pa.Table, dictionary: bool | list[str], row_group_size: int) -> tuple[float, bytes]:
    """CPU seconds to write ``table`` as the sink does (but for ``dictionary``), and the file."""
    out = io.BytesIO()
    started = time.process_time()
    with pq.ParquetWriter(out, table.schema, compression="zstd", write_statistics=True,
                          use_dictionary=dictionary) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    return time.process_time() - started, out.getvalue()


def run_output(records: int, work: Path) -> pa.Table:
    """The sales partition one real run writes for ``records`` records."""
    api, url = start_api("memory", records, 1_000)
    try:
        env = {**os.environ, "SALES_API_URL": url, "PYTHONPATH": str(ROOT)}
        env.pop("SALES_API_TOKEN", None)
        subprocess.run([sys.executable, "-m", "scheduler", "run-job", "daily_sales", "--date", DAY, "--config",
                        str(bench_config(work)), "--data-dir", str(work / "data"), "--log-level", "warning"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
    finally:
        api.terminate()
        api.wait(timeout=10)
    return pq.read_table(work / "data" / "sales" / f"date={DAY}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--row-group-size", type=int, default=50_000, help="the shipped config's row groups")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parquet-bench-") as tmp:
        table = run_output(args.records, Path(tmp)).combine_chunks()
    chosen = dictionary_columns(table)
    legs: dict[str, bool | list[str]] = {"default (all)": True, "sink's choice": chosen}
    best = dict.fromkeys(legs, float("inf"))
    files: dict[str, bytes] = {}
    for _ in range(args.rounds):
        for leg, dictionary in legs.items():
            seconds, files[leg] = written(table, dictionary, args.row_group_size)
            best[leg] = min(best[leg], seconds)
    first, second = (pq.read_table(io.BytesIO(data)) for data in files.values())
    assert first.equals(second), "the two encodings read back differently"
    base = best["default (all)"]
    print(f"rows={table.num_rows} columns={table.num_columns} row_group_size={args.row_group_size} "
          f"rounds={args.rounds} dictionary columns chosen: {', '.join(chosen) or 'none'}")
    print(f"{'leg':<14} {'ms/1000 rows':>13} {'x default':>10} {'file MB':>8}")
    for leg in legs:
        print(f"{leg:<14} {best[leg] * 1000 / table.num_rows * 1000:>13.3f} {best[leg] / base:>10.2f} "
              f"{len(files[leg]) / 1e6:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
