"""``scheduler demo``: the quick start.  Runs ``daily_sales`` against the bundled sample API.

Starts the sample sales API on 127.0.0.1 (in this process), points ``SALES_API_URL`` at it, runs
``daily_sales`` for date D through the code path of ``run-job`` (child process, state record,
atomic Parquet publish), then shows where the Parquet went and a few cleaned rows.
"""

from __future__ import annotations

import argparse
import os
from datetime import date, timedelta
from pathlib import Path

from scheduler.app.commands import run_job
from scheduler.app.context import App, Options


def cmd_demo(args: argparse.Namespace) -> int:
    from scheduler.sample.api import start_server

    options = Options.from_args(args)
    day = date.fromisoformat(args.date) if args.date else date.today() - timedelta(days=1)
    server, url = start_server(port=0, records_per_day=args.records)
    try:
        os.environ["SALES_API_URL"] = url  # the config reads it (``${SALES_API_URL}``) when loaded below
        print(f"sample sales API on {url} ({args.records:,} dirty records for {day})", flush=True)
        with App.load(options) as app:
            code = run_job(app, args.job, day, {})
    finally:
        server.shutdown()
    if code == 0:
        show(options.data_root, day)
    return code


def show(root: Path, day: date) -> None:
    """Print the published partition, the rejects and the first rows."""
    import pyarrow.parquet as pq

    partition = root / "sales" / f"date={day.isoformat()}"
    table = pq.read_table(partition)
    print(f"\npublished {table.num_rows:,} rows to {partition}/")
    for file in sorted(partition.glob("*.parquet")):
        print(f"  {file.name}  {file.stat().st_size:,} bytes")
    rejects = root / "sales_rejects" / f"date={day.isoformat()}"
    if rejects.exists():
        rejected = pq.read_table(rejects)
        print(f"rejected {rejected.num_rows:,} rows to {rejects}/ (with the reason)")
    print("\nfirst rows:")
    print(table.slice(0, 5).to_pandas().to_string(index=False))
