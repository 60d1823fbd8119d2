"""Spec validation, safe expressions, transform steps and the sample API, in isolation."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from pydantic import ValidationError

from scheduler.kinds.ingest.expr import ExpressionError, parse_expression
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.kinds.ingest.transform import Transformer
from scheduler.sample.api import SalesData

REPO = Path(__file__).resolve().parents[2]


def job(**override: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": "ingest", "source": {"base_url": "http://127.0.0.1:9"},
                            "sink": {"dataset": "sales", "schema": {"id": "int"}}}
    base.update(override)
    return base


@pytest.mark.parametrize("override, location, message", [
    ({"sink": {"dataset": "../etc", "schema": {"id": "int"}}}, ("sink", "dataset"), "inside the data dir"),
    ({"sink": {"dataset": "/abs", "schema": {"id": "int"}}}, ("sink", "dataset"), "inside the data dir"),
    ({"sink": {"dataset": "a/../../b", "schema": {"id": "int"}}}, ("sink", "dataset"), "inside the data dir"),
    ({"sink": {"dataset": "s", "schema": {"id": "varchar"}}}, ("sink", "schema"), "unknown type 'varchar'"),
    ({"sink": {"dataset": "s", "schema": {"id": "int"}, "mode": "merge"}}, ("sink",), "needs 'merge_key'"),
    ({"transform": [{"explode": "x"}]}, ("transform", 0), "each step is a mapping with one key"),
    ({"transform": [{"derive": {"x": "__import__('os').system('id')"}}]}, ("transform", 0, "derive", "derive"),
     "not allowed"),
    ({"transform": [{"filter": "a.b > 1"}]}, ("transform", 0, "filter", "filter", "expr"), "not allowed"),
    ({"source": {"base_url": "${SALES_API_URL}"}}, ("source", "base_url"), "http(s) URL"),
    ({"source": {"base_url": "http://x", "params": {"d": "{tomorrow}"}}}, (), "unknown placeholder {tomorrow}"),
    ({"source": {"base_url": "http://x", "pagination": {"type": "cursor"}}},
     ("source", "pagination", "cursor", "cursor_path"), "Field required"),
    ({"source": {"base_url": "http://x", "retries": {"statuses": [404]}}}, ("source", "retries", "statuses"),
     "not 404"),
    ({"source": {"base_url": "http://x", "auth": {"type": "bearer", "token": "t", "tokn": 1}}},
     ("source", "auth", "bearer", "tokn"), "Extra"),
])
def test_bad_specs_are_located(override: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        IngestJob.model_validate(job(**override))
    errors = caught.value.errors()
    assert any(e["loc"] == location and message in e["msg"] for e in errors), errors


def test_example_job_validates_and_round_trips() -> None:
    from scheduler.config.loader import load_models

    config = load_models(REPO / "config" / "jobs.yaml", env={"SALES_API_URL": "http://127.0.0.1:8080"})
    spec = config.jobs["daily_sales"]
    assert isinstance(spec, IngestJob)
    assert IngestJob.model_validate(spec.model_dump()) == spec  # workers re-validate a dump by field name
    assert spec.sink.rejects_dataset == "sales_rejects" and spec.schedule == "15 2 * * *"


def test_spec_import_stays_light() -> None:
    code = ("import scheduler.config, sys; import scheduler.kinds.ingest.spec; "
            "heavy = {'pandas', 'pyarrow', 'requests', 'numpy'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("text", ["a * b", "abs(a - 1) + round(b, 2)", "a > 0 and not (b == 'x')", "coalesce(a, 0) / 2",
                                  "1 < a <= 5", "isnull(a) or a != 3"])
def test_expressions_allowed(text: str) -> None:
    parse_expression(text)


@pytest.mark.parametrize("text", ["__import__('os')", "a.b", "a[0]", "(lambda: 1)()", "[x for x in a]", "open('f')",
                                  "a if b else c", "f'{a}'", "a := 1", ""])
def test_expressions_rejected(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(text)


def test_expression_evaluates_on_columns() -> None:
    frame = pd.DataFrame({"quantity": [2, -1, None], "unit_price": [1.5, 2.0, 3.0]})
    revenue = parse_expression("quantity * unit_price").evaluate(frame)
    assert revenue.tolist()[:2] == [3.0, -2.0] and pd.isna(revenue[2])
    with pytest.raises(ExpressionError, match="missing column"):
        parse_expression("qty * 2").evaluate(frame)


def steps(*items: dict[str, Any]) -> Transformer:
    spec = IngestJob.model_validate(job(transform=list(items)))
    return Transformer(spec.transform, lambda column, step: None)


def test_steps_reject_with_reasons_and_keep_everything_accounted() -> None:
    frame = pd.DataFrame({
        "id": ["1", "2", "3", "4", "5", "6"],
        "price": ["$12.50", "1,200.00", "free", "5", "7", "€3"],
        "when": ["2026-11-05T10:00:00Z", "2026-11-05 11:00", "2026-11-05T10:00:00Z", "nope",
                 "2026-11-05T12:00:00+01:00", None],
        "flag": ["yes", "N", "1", "yes", "maybe", None],
        "customer": [{"email": "A@B.COM", "tier": {"level": 1}}, None, {"email": "c@d"}, {"email": "E@F"},
                     {"email": "x@y"}, {"email": "Z@Z"}],
    })
    t = steps({"flatten": True}, {"parse_number": ["price"]},
              {"cast": {"when": {"type": "timestamp", "timezone": "Europe/Berlin"}}},
              {"cast": {"flag": "bool", "id": "int"}}, {"lower": ["customer_email"]},
              {"rename": {"customer_email": "email"}}, {"filter": {"expr": "price > 1", "on_fail": "drop"}})
    result = t.apply(frame)
    out = result.frame
    assert out["id"].tolist() == [1, 2, 6]  # nulls are not failures: not_null checks are for that
    assert out["price"].tolist() == [12.5, 1200.0, 3.0]
    assert out["email"].iloc[0] == "a@b.com" and pd.isna(out["email"].iloc[1])
    assert "customer_tier_level" in out.columns
    assert str(out["when"].dt.tz) == "UTC" and out["when"].iloc[1] == pd.Timestamp("2026-11-05 10:00", tz="UTC")
    reasons = pd.concat(result.rejects)["reason"].tolist()
    assert any("price: cannot parse a number from: 'free'" in r for r in reasons)
    assert any("when: cannot parse as timestamp: 'nope'" in r for r in reasons)
    assert any("flag: cannot cast to bool: 'maybe'" in r for r in reasons)
    assert len(out) + result.rejected + result.filtered + result.duplicates == len(frame)


def test_decimal_cast_and_arithmetic() -> None:
    t = steps({"cast": {"p": "decimal(10,2)", "q": "int"}}, {"derive": {"r": "p * q"}})
    result = t.apply(pd.DataFrame({"p": ["12.50", "3", "x"], "q": [2, "3", 1]}))
    assert [str(v) for v in result.frame["p"]] == ["12.50", "3.00"]
    assert result.rejected == 1


def test_sample_api_is_deterministic_and_dirty() -> None:
    data = SalesData(5_000)
    day = date(2026, 11, 5)
    first, again = data.records(day, 0, 5_000), SalesData(5_000).records(day, 0, 5_000)
    assert first == again
    ids = [r["order_id"] for r in first]
    assert len(set(ids)) < len(ids)  # duplicates
    assert any(r["store_id"] is None for r in first)
    assert any(isinstance(r["quantity"], str) for r in first) and any(int(r["quantity"]) < 0 for r in first)
    assert any(r["unit_price"].startswith("$") for r in first)
    assert any(r["sku"] != r["sku"].lower() for r in first)
    assert first != data.records(date(2026, 11, 6), 0, 5_000)


def test_sample_api_token_and_injected_failures() -> None:
    from scheduler.sample.api import start_server

    server, url = start_server(records_per_day=10, token="t0k", fail_every=2, fail_status=429, retry_after=3)
    try:
        assert requests.get(f"{url}/v1/sales", params={"date": "2026-11-05"}, timeout=5).status_code == 401
        authorized = {"Authorization": "Bearer t0k"}
        ok = requests.get(f"{url}/v1/sales", params={"date": "2026-11-05"}, headers=authorized, timeout=5)
        assert ok.status_code == 429 and ok.headers["Retry-After"] == "3"
        ok = requests.get(f"{url}/v1/sales", params={"date": "2026-11-05"}, headers=authorized, timeout=5)
        assert ok.json()["total_pages"] == 1 and len(ok.json()["data"]) == 10
    finally:
        server.shutdown()
        server.server_close()


def test_sample_api_command_prints_its_url() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.sample.api", "--port", "0", "--records-per-day", "50",
                             "--per-page", "20"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        body = requests.get(f"{url}/v1/sales", params={"date": "2026-11-05", "page": 3}, timeout=5).json()
        assert body["total_pages"] == 3 and len(body["data"]) == 10 and body["total"] == 50
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
