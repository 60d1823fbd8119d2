"""``scheduler demo``: the quick start.  Runs ``daily_sales`` against the bundled sample API.

Starts the sample sales API on 127.0.0.1 (in this process), points ``SALES_API_URL`` at it, runs
``run-job daily_sales --date D`` through the normal code path (child process, state record,
atomic Parquet publish), then shows where the Parquet went and a few cleaned rows.
"""

from __future__ import annotations

import argparse
import os
from datetime import date, timedelta
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> int:
    from scheduler.cli import config_path, data_dir, main
    from scheduler.sample_api import start_server

    day = date.fromisoformat(args.date) if args.date else date.today() - timedelta(days=1)
    server, url = start_server(port=0, records_per_day=args.records)
    try:
        os.environ["SALES_API_URL"] = url
        print(f"sample sales API on {url} ({args.records:,} dirty records for {day})", flush=True)
        argv = ["run-job", args.job, "--date", day.isoformat(), "--config", str(config_path(args)),
                "--data-dir", str(data_dir(args))]
        for flag in ("log_level", "log_format"):
            if getattr(args, flag, None):
                argv += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
        code = main(argv)
    finally:
        server.shutdown()
    if code == 0:
        show(data_dir(args), day)
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
