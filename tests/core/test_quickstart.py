"""The README's first command: ``scheduler demo`` runs daily_sales against the sample API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def test_demo_publishes_clean_parquet(tmp_path, scheduler_cmd, scheduler_env):
    data = tmp_path / "data"
    proc = subprocess.run([*scheduler_cmd, "demo", "--date", "2026-11-05", "--records", "3000",
                           "--data-dir", str(data), "--config", str(REPO / "config")],
                          capture_output=True, text=True, env=scheduler_env, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"to {data}/sales/date=2026-11-05/" in proc.stdout
    table = pq.read_table(data / "sales" / "date=2026-11-05")
    assert table.column_names == ["order_id", "sold_at", "store_id", "sku", "quantity", "unit_price",
                                  "currency", "customer_email", "customer_segment", "revenue"]
    assert 0 < table.num_rows <= 3000
    assert len(set(table.column("order_id").to_pylist())) == table.num_rows
    assert (data / "sales_rejects" / "date=2026-11-05").is_dir()
