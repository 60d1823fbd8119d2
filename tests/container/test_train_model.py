"""jobs/train_model.py on generated sales partitions (standalone, CPU, no engine needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "jobs" / "train_model.py"

SCHEMA = pa.schema([
    ("order_id", pa.string()), ("sold_at", pa.timestamp("us", tz="UTC")), ("store_id", pa.int64()),
    ("sku", pa.string()), ("quantity", pa.int64()), ("unit_price", pa.float64()), ("currency", pa.string()),
    ("customer_email", pa.string()), ("customer_segment", pa.string()), ("revenue", pa.float64()),
])  # fmt: skip


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_model_under_test", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_sales(data_dir: Path, start: date, days: int, seed: int = 7) -> None:
    """Two stores with a weekend peak and a slow upward trend, plus returns and store-less rows."""
    rng = np.random.default_rng(seed)
    for offset in range(days):
        day = start + timedelta(days=offset)
        rows = []
        for store, base in ((1, 20), (2, 50)):
            expected = base * (1.8 if day.weekday() >= 5 else 1.0) + offset * 0.1
            for n in range(int(rng.poisson(expected))):
                rows.append((f"{day}-{store}-{n}", store, 1))
        rows.append((f"{day}-ret", 1, -1))
        rows.append((f"{day}-none", None, 3))
        ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        table = pa.table({
            "order_id": [r[0] for r in rows], "sold_at": [ts] * len(rows), "store_id": [r[1] for r in rows],
            "sku": ["sku-1"] * len(rows), "quantity": [r[2] for r in rows], "unit_price": [2.5] * len(rows),
            "currency": ["EUR"] * len(rows), "customer_email": ["a@example.com"] * len(rows),
            "customer_segment": ["retail"] * len(rows), "revenue": [2.5 * r[2] for r in rows],
        }, schema=SCHEMA)  # fmt: skip
        part = data_dir / "sales" / f"date={day.isoformat()}"
        part.mkdir(parents=True)
        pq.write_table(table, part / "part-0.parquet", compression="zstd")


def test_fits_per_store_models_and_publishes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_LOGICAL_DATE", raising=False)
    write_sales(tmp_path, date(2026, 8, 1), days=70)
    module = load_script()
    assert module.main(["--data-dir", str(tmp_path), "--device", "cpu"]) == 0
    out = tmp_path / "models" / "2026-10-09"
    model = json.loads((out / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(model["stores"]) == ["1", "2"]
    assert model["backend"].startswith("numpy")
    store2 = model["stores"]["2"]
    assert store2["coefficients"]["dow_sat"] > 20  # the weekend peak was learned
    assert len(store2["forecast"]) == 7 and min(store2["forecast"].values()) > 0
    overall = metrics["overall"]
    assert overall["holdout_days"] == 7
    assert overall["model"]["mae"] < overall["naive_mean"]["mae"]
    assert metrics["rows_without_store"] == 70
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_window_ends_at_the_logical_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sales(tmp_path, date(2026, 8, 1), days=30)
    monkeypatch.setenv("SCHEDULER_LOGICAL_DATE", "2026-08-20")
    module = load_script()
    assert module.main(["--data-dir", str(tmp_path), "--window-days", "14", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "models" / "2026-08-20" / "metrics.json").read_text())
    assert metrics["days"] == ["2026-08-07", "2026-08-20"]
    assert metrics["overall"]["holdout_days"] == 0  # 14 days: too few to hold any out


def test_runs_standalone_and_fails_clearly_without_data(tmp_path: Path) -> None:
    empty = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert empty.returncode == 1 and "no sales partitions under" in empty.stderr
    write_sales(tmp_path, date(2026, 8, 1), days=21)
    ok = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "training on 21 days" in ok.stdout and "wrote" in ok.stdout
    assert (tmp_path / "models" / "2026-08-21" / "model.json").exists()
