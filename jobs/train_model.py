"""Fit a small demand model per store from the sales partitions and publish it under data/models/.

    python jobs/train_model.py --data-dir /data [--date 2026-11-05] [--window-days 90]

Reads ``<data dir>/sales/date=YYYY-MM-DD/*.parquet`` (the clean output of the ``daily_sales``
ingest) for the ``--window-days`` days up to ``--date`` (default: ``SCHEDULER_LOGICAL_DATE``, else
the newest partition).  For each store it models daily units sold as a level, a linear trend and a
day-of-week effect, fitted by ridge-regularised least squares: on the GPU with torch when CUDA is
available, with numpy otherwise.  The last ``--holdout-days`` days are held out to measure the
model against a naive mean forecast.

Writes ``<data dir>/models/<date>/model.json`` (coefficients and a 7-day forecast per store) and
``metrics.json`` (errors per store and overall), each published atomically.  Exit codes: 0 done,
1 no usable data, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

DOW_FEATURES = 6  # Monday is the baseline; Tuesday..Sunday get a column each
MIN_TRAIN_DAYS = 14
RIDGE = 1e-3
COEFFICIENTS = ("level", "trend_per_week", "dow_tue", "dow_wed", "dow_thu", "dow_fri", "dow_sat", "dow_sun")


def partitions(dataset_dir: Path, until: date | None, window_days: int) -> dict[date, list[Path]]:
    """Partition date -> its Parquet files, for the window ending at ``until`` (or the newest)."""
    found: dict[date, list[Path]] = {}
    for part in dataset_dir.glob("date=*"):
        try:
            day = date.fromisoformat(part.name.removeprefix("date="))
        except ValueError:
            continue
        files = sorted(part.glob("*.parquet"))
        if part.is_dir() and files:
            found[day] = files
    if not found:
        return {}
    end = until or max(found)
    start = end - timedelta(days=window_days - 1)
    return {d: f for d, f in sorted(found.items()) if start <= d <= end}


def daily_units(parts: dict[date, list[Path]]) -> tuple[list[date], dict[int, np.ndarray], dict[str, int]]:
    """Units sold per store per partition day (a store absent on a day sold 0 that day)."""
    days = sorted(parts)
    index = {d: i for i, d in enumerate(days)}
    per_store: dict[int, np.ndarray] = {}
    counts = {"rows": 0, "rows_without_store": 0}
    for day, files in parts.items():
        for path in files:
            table = pq.read_table(path, columns=["store_id", "quantity"])
            counts["rows"] += table.num_rows
            counts["rows_without_store"] += table["store_id"].null_count
            table = table.filter(pc.is_valid(table["store_id"]))
            if table.num_rows == 0:
                continue
            grouped = table.group_by("store_id").aggregate([("quantity", "sum")])
            for store, units in zip(grouped["store_id"].to_pylist(), grouped["quantity_sum"].to_pylist(), strict=True):
                series = per_store.setdefault(int(store), np.zeros(len(days)))
                series[index[day]] += units or 0
    return days, per_store, counts


def design(days: list[date], origin: date) -> np.ndarray:
    """Columns: intercept, trend (in weeks since ``origin``), Tuesday..Sunday indicators."""
    x = np.zeros((len(days), 2 + DOW_FEATURES))
    for i, day in enumerate(days):
        x[i, 0] = 1.0
        x[i, 1] = (day - origin).days / 7.0
        if day.weekday() > 0:
            x[i, 1 + day.weekday()] = 1.0
    return x


class Solver:
    """Ridge least squares, ``(XᵀX + λI) w = Xᵀy``, on CUDA with torch when available."""

    def __init__(self, device: str) -> None:
        self.torch: Any = None
        self.device = "cpu"
        if device in ("auto", "cuda"):
            try:
                # an optional dependency: only images with a GPU stack carry it (so it may be absent
                # where types are checked)
                import torch  # type: ignore[import-not-found, unused-ignore]

                if torch.cuda.is_available():
                    self.torch, self.device = torch, "cuda"
            except ImportError:
                pass
            if device == "cuda" and self.torch is None:
                raise SystemExit("error: --device cuda but torch with CUDA is not available")
        if self.torch is not None:
            self.backend = f"torch {self.torch.__version__} on {self.torch.cuda.get_device_name(0)}"
        else:
            self.backend = f"numpy {np.__version__} on cpu"

    def fit(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        penalty = RIDGE * np.eye(x.shape[1])
        penalty[0, 0] = 0.0  # the level is not shrunk
        if self.torch is not None:
            t = self.torch
            xt = t.as_tensor(x, dtype=t.float64, device="cuda")
            yt = t.as_tensor(y, dtype=t.float64, device="cuda")
            pt = t.as_tensor(penalty, dtype=t.float64, device="cuda")
            w = t.linalg.solve(xt.T @ xt + pt, xt.T @ yt)
            solution: np.ndarray = w.cpu().numpy()
            return solution
        return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def errors(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    diff = predicted - actual
    total = float(np.abs(actual).sum())
    return {
        "mae": round(float(np.abs(diff).mean()), 4),
        "rmse": round(float(math.sqrt((diff**2).mean())), 4),
        "wape": round(float(np.abs(diff).sum()) / total, 4) if total else None,
    }


def train(
    days: list[date], per_store: dict[int, np.ndarray], holdout_days: int, solver: Solver
) -> tuple[dict[str, Any], dict[str, Any]]:
    origin = days[0]
    x = design(days, origin)
    holdout = holdout_days if len(days) - holdout_days >= MIN_TRAIN_DAYS else 0
    split = len(days) - holdout
    future = [days[-1] + timedelta(days=k) for k in range(1, 8)]
    x_future = design(future, origin)
    models: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    all_actual, all_pred, all_naive = [], [], []
    for store in sorted(per_store):
        y = per_store[store]
        if holdout:
            w = solver.fit(x[:split], y[:split])
            predicted = x[split:] @ w
            naive = np.full(holdout, y[:split].mean())
            metrics[str(store)] = {"model": errors(y[split:], predicted), "naive_mean": errors(y[split:], naive)}
            all_actual.append(y[split:])
            all_pred.append(predicted)
            all_naive.append(naive)
        w = solver.fit(x, y)  # the published model uses every day
        forecast = np.clip(x_future @ w, 0, None)
        models[str(store)] = {
            "coefficients": {name: round(float(v), 6) for name, v in zip(COEFFICIENTS, w, strict=True)},
            "forecast": {d.isoformat(): round(float(v), 3) for d, v in zip(future, forecast, strict=True)},
            "train_days": len(days),
            "units_total": float(y.sum()),
        }
    overall: dict[str, Any] = {"holdout_days": holdout}
    if holdout and all_actual:
        actual, pred, naive = np.concatenate(all_actual), np.concatenate(all_pred), np.concatenate(all_naive)
        overall["model"] = errors(actual, pred)
        overall["naive_mean"] = errors(actual, naive)
    return models, {"overall": overall, "stores": metrics}


def publish_json(path: Path, payload: dict[str, Any]) -> None:
    """Temp file in the same directory, fsync, rename, fsync the directory: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the model from readers in other uids
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SCHEDULER_DATA_DIR", "data")))
    parser.add_argument("--dataset", default="sales")
    parser.add_argument("--date", type=date.fromisoformat, default=None,
                        help="last day to train on "
                             "(default: SCHEDULER_LOGICAL_DATE, else the newest partition)")  # fmt: skip
    parser.add_argument("--window-days", type=int, default=90)
    parser.add_argument("--holdout-days", type=int, default=7)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    if args.date is None and os.environ.get("SCHEDULER_LOGICAL_DATE"):
        args.date = date.fromisoformat(os.environ["SCHEDULER_LOGICAL_DATE"])
    if args.window_days < 1 or args.holdout_days < 0:
        parser.error("--window-days must be >= 1 and --holdout-days >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    parts = partitions(args.data_dir / args.dataset, args.date, args.window_days)
    if not parts:
        print(f"error: no {args.dataset} partitions under {args.data_dir / args.dataset} "
              f"up to {args.date or 'now'}", file=sys.stderr, flush=True)  # fmt: skip
        return 1
    days, per_store, counts = daily_units(parts)
    if not per_store:
        print(f"error: {counts['rows']} rows in {len(days)} partitions, none with a store_id", file=sys.stderr,
              flush=True)
        return 1
    solver = Solver(args.device)
    print(f"training on {len(days)} days ({days[0]}..{days[-1]}), {len(per_store)} stores, "
          f"{counts['rows']} rows, with {solver.backend}", flush=True)  # fmt: skip
    models, metrics = train(days, per_store, args.holdout_days, solver)
    as_of = args.date or days[-1]
    out_dir = args.data_dir / "models" / as_of.isoformat()
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    common = {"as_of": as_of.isoformat(), "trained_at": trained_at, "backend": solver.backend,
              "days": [days[0].isoformat(), days[-1].isoformat()], "partitions": len(days)}  # fmt: skip
    metrics.update(common, rows=counts["rows"], rows_without_store=counts["rows_without_store"],
                   seconds=round(time.monotonic() - started, 3))  # fmt: skip
    publish_json(out_dir / "model.json",
                 {**common, "model": "ridge: level + weekly trend + day of week", "stores": models})
    publish_json(out_dir / "metrics.json", metrics)
    overall = metrics["overall"]
    if "model" in overall:
        print(f"holdout {overall['holdout_days']}d: model MAE {overall['model']['mae']} "
              f"vs naive {overall['naive_mean']['mae']}", flush=True)  # fmt: skip
    print(f"wrote {out_dir / 'model.json'} and metrics.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
