"""Ingest benchmark: the floor, a naive pandas baseline and the real ``daily_sales`` run, in one go.

The API runs in its own process (so it does not share a GIL with the measured process) and serves
``--records`` records for one date in pages of ``--per-page``.  By default (``--server memory``)
it is ``bench/memory_api.py``: every page is rendered once at start from the sample API's
generator and then served as stored bytes, so the client is the bottleneck, as with a real API
on a fast network.  ``--server sample`` uses the bundled sample API, which builds each page on
request and is itself the bottleneck: its floor is slow, and ratios to it flatter the client.

The package and the shipped hooks are byte-compiled first (untimed), as an install leaves them.
Each leg runs in a child process (``--repeat N``: N times, the legs interleaved, each figure the
median of its N runs); we record its wall time, the peak RSS and the peak PSS of its whole
process tree and CPU seconds (user+sys, ``RUSAGE_CHILDREN``: every waited-for descendant, the
worker included), with the 1-minute load average at its end (other work on the machine skews
wall-clock ratios, CPU seconds much less).  RSS counts a shared page in every process that maps
it, PSS shares it out, so the PSS sum is what the tree holds.  Memory is polled every 100 ms: a
poll reads /proc and each process's smaps_rollup, CPU taken from the cores the measured run
uses, and a run's memory is flat, so its peak lasts longer than that:

- ``floor``: fetch every page with a requests ``Session`` and parse its JSON, nothing else;
- ``naive``: requests + pandas, every page kept in memory, ``json_normalize``, the same
  cleaning, one ``to_parquet``;
- ``arrow``: the same cleaning written by hand with the best tools, in one process, as a lower
  bound for ours: urllib3, Arrow's JSON reader with the schema given, compute kernels, the
  package's key set for the dedupe, the shipped pandas hook, one ``ParquetWriter`` with the sink's
  settings.  It checks nothing it is not told to, keeps no rejects and reads only pages shaped
  like the sample API's; on those it writes the rows and values ours writes;
- ``ours``: ``python -m scheduler run-job daily_sales --date D --config CFG --data-dir DIR`` with
  ``SALES_API_URL`` set; CFG is ``config/jobs.yaml`` without the job's ``rate_limit`` (the
  limiter would be measured, not the code).  An untimed ``scheduler validate`` of CFG with the
  same environment comes first, so the measured call finds the compiled config in the cache, as
  every call after the first does; ``--cold-config`` skips it (the first call then also pays
  the config check in a child process);
- ``dlt`` (optional): a dlt pipeline (``dlt[parquet,filesystem]``) fetching the same pages with
  requests and writing Parquet to a local filesystem destination.  It runs under ``--dlt-python``
  (a bench venv: ``python -m venv /tmp/dlt && /tmp/dlt/bin/pip install 'dlt[parquet,filesystem]'``)
  or this interpreter; without dlt the leg is skipped with a message.

Usage (README snippet)::

    python bench/ingest_bench.py --records 200000          # quick
    python bench/ingest_bench.py --records 1000000         # the full run
    python bench/ingest_bench.py --records 1000000 --legs floor,ours --json results.json
    python bench/ingest_bench.py --records 1000000 --legs floor,ours --repeat 3   # medians of 3, interleaved
    python bench/ingest_bench.py --records 1000000 --legs floor,arrow,ours --repeat 3   # with the lower bound

Goals at 1,000,000 records: ours within 1.5x the floor's CPU seconds and 1.2x its wall time, peak
memory <= 250 MB and flat from 200,000 to 1,000,000 records; at 200,000 records, start-up included,
within 2x the floor's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-11-05"
POLL_SECONDS = 0.1  # the memory poll: often enough for a flat peak, cheap beside the run

FLOOR = textwrap.dedent("""
    import json, sys, requests
    url, pages, per_page = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    session, rows = requests.Session(), 0
    for page in range(1, pages + 1):
        resp = session.get(url + "/v1/sales", params={"date": sys.argv[4], "page": page, "per_page": per_page},
                           timeout=60)
        resp.raise_for_status()
        rows += len(json.loads(resp.content)["data"])
    print(rows)
""")

DLT = textwrap.dedent("""
    import sys, dlt, requests
    url, pages, per_page, day, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

    @dlt.resource(name="sales", write_disposition="replace", primary_key="order_id")
    def sales():
        session = requests.Session()
        for page in range(1, pages + 1):
            resp = session.get(url + "/v1/sales", params={"date": day, "page": page, "per_page": per_page}, timeout=60)
            resp.raise_for_status()
            yield resp.json()["data"]

    pipeline = dlt.pipeline(pipeline_name="ingest_bench", destination=dlt.destinations.filesystem(out),
                            dataset_name="sales", pipelines_dir=out + "/.pipelines")
    info = pipeline.run(sales(), loader_file_format="parquet")
    print(info)
""")

NAIVE = textwrap.dedent("""
    import sys, requests, pandas as pd
    url, pages, per_page, day, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    session, records = requests.Session(), []
    for page in range(1, pages + 1):
        resp = session.get(url + "/v1/sales", params={"date": day, "page": page, "per_page": per_page}, timeout=60)
        resp.raise_for_status()
        records.extend(resp.json()["data"])
    df = pd.json_normalize(records, sep="_")
    df["sold_at"] = pd.to_datetime(df["sold_at"], format="ISO8601", utc=True, errors="coerce")
    df["quantity"] = pd.to_numeric(df["quantity"], errors="coerce")
    df["unit_price"] = pd.to_numeric(df["unit_price"].astype(str).str.replace(r"[^0-9.\\-]", "", regex=True),
                                     errors="coerce")
    df["store_id"] = df["store_id"].astype("Int64")
    df["sku"] = df["sku"].str.lower()
    df["customer_email"] = df["customer_email"].str.lower()
    rejects = df[df["sold_at"].isna() | df["quantity"].isna() | df["unit_price"].isna()]
    df = df.drop(rejects.index).drop_duplicates("order_id")
    df["quantity"] = df["quantity"].astype("int64")
    df["revenue"] = df["quantity"] * df["unit_price"]
    df.to_parquet(out, compression="zstd", index=False)
    print(len(df))
""")


# The same cleaning as daily_sales written by hand with the best tools, as a lower bound: one
# urllib3 connection pool (cheaper per request than requests), Arrow's streaming JSON reader with
# the schema given, compute kernels, the package's own key set for the dedupe (the cheapest we
# have), the shipped pandas hook, one ParquetWriter with the sink's settings and row groups.  It
# checks nothing it is not told to, keeps no rejects (it drops them), and reads only pages shaped
# like the sample API's: an unparsable value is a null.  On the sample API's pages it writes the
# rows and values ours writes (the benchmark checks it).
ARROW = textwrap.dedent("""
    import functools, sys, urllib3, pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj, pyarrow.parquet as pq
    from jobs.sales import clean
    from scheduler.kinds.ingest.keys import KeySet, text_digests
    from scheduler.kinds.ingest.sink import dictionary_columns
    url, pages, per_page, day, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    QTY_TEXT = "quantity_text"  # "quantity": "3" beside "quantity": 3 would stop the reader: renamed in the bytes
    record = pa.struct([("order_id", pa.string()), ("sold_at", pa.string()), ("store_id", pa.int64()),
                        ("sku", pa.string()), ("quantity", pa.int64()), (QTY_TEXT, pa.string()),
                        ("unit_price", pa.string()), ("currency", pa.string()),
                        ("customer", pa.struct([("email", pa.string()), ("segment", pa.string())]))])
    parse = pj.ParseOptions(explicit_schema=pa.schema([("data", pa.list_(record))]),
                            unexpected_field_behavior="ignore")
    schema = pa.schema([("order_id", pa.string()), ("sold_at", pa.timestamp("us", tz="UTC")),
                        ("store_id", pa.int64()), ("sku", pa.string()), ("quantity", pa.int64()),
                        ("unit_price", pa.float64()), ("currency", pa.string()), ("customer_email", pa.string()),
                        ("customer_segment", pa.string()), ("revenue", pa.float64())])
    seen, held, waiting, written, writer = KeySet(), [], [], 0, None

    def clean_batch(pages):
        r = pa.concat_arrays([p.column("data").chunk(0).flatten() for p in pages]).flatten()
        get = dict(zip(record.names, r))
        customer = get["customer"].flatten()
        price = pc.replace_substring_regex(get["unit_price"], r"[^0-9.\\-]", "")
        price = pc.cast(pc.if_else(pc.match_substring_regex(price, r"^-?[0-9]+(\\.[0-9]+)?$"), price, None),
                        pa.float64())
        table = pa.table({
            "order_id": get["order_id"],
            "sold_at": pc.strptime(get["sold_at"], format="%Y-%m-%dT%H:%M:%SZ", unit="us",
                                   error_is_null=True).cast(schema.field("sold_at").type),
            "store_id": get["store_id"],
            "sku": pc.utf8_trim_whitespace(pc.utf8_lower(get["sku"])),
            "quantity": pc.coalesce(get["quantity"], pc.cast(get[QTY_TEXT], pa.int64())),
            "unit_price": price,
            "currency": pc.utf8_trim_whitespace(get["currency"]),
            "customer_email": pc.utf8_trim_whitespace(pc.utf8_lower(customer[0])),
            "customer_segment": customer[1],
        })
        present = [pc.is_valid(table[name]) for name in ("order_id", "sold_at", "sku", "quantity", "unit_price")]
        table = table.filter(functools.reduce(pc.and_, present))  # what ours rejects, dropped before the dedupe
        table = table.filter(seen.first_seen(text_digests(table.column("order_id").combine_chunks())))
        table = table.append_column("revenue", pc.multiply(pc.cast(table["quantity"], pa.float64()),
                                                           table["unit_price"]))
        frame, _rejects = clean(table.to_pandas())
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        in_range = pc.and_(pc.greater_equal(table["unit_price"], 0),
                           pc.and_(pc.greater_equal(table["quantity"], -1000), pc.less_equal(table["quantity"], 1000)))
        return table.filter(pc.fill_null(in_range, False))

    http = urllib3.connection_from_url(url)  # one pool: a PoolManager routes every request first
    for page in range(1, pages + 1):
        query = {"date": day, "page": str(page), "per_page": str(per_page)}
        resp = http.request("GET", "/v1/sales", fields=query, timeout=60)
        assert resp.status == 200, resp.status
        body = resp.data.replace(b'"quantity":"', b'"' + QTY_TEXT.encode() + b'":"')
        # the streaming reader parses in this thread; read_json waits for a read-ahead thread
        read = pj.ReadOptions(use_threads=False, block_size=len(body) + 1)  # the page in one block
        held.append(pj.open_json(pa.BufferReader(body), read_options=read, parse_options=parse).read_all())
        if len(held) == 10 or page == pages:
            waiting.append(clean_batch(held))
            held = []
            table = pa.concat_tables(waiting)
            full = table.num_rows if page == pages else table.num_rows // 50_000 * 50_000
            if full or page == pages:  # full row groups, the rest kept for the next, as the sink writes them
                if writer is None:  # the sink's dictionary columns, chosen from its first rows
                    writer = pq.ParquetWriter(out, schema, compression="zstd", write_statistics=True,
                                              use_dictionary=dictionary_columns(table))
                writer.write_table(table.slice(0, full), row_group_size=50_000)
                written, waiting = written + full, [table.slice(full)]
    writer.close()
    print(written)
""")


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``argv``; wall seconds, and peak RSS and PSS (MB) summed over the process and its
    descendants.  RSS counts a page shared by two processes (a library, or what a forked child
    shares with its parent) once in each; PSS splits it between them, so its sum is the memory
    the tree holds."""
    started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: list[str] = []
    ended: list[float] = []
    done = threading.Event()

    def wait() -> None:  # the leg's end, timed when it happens, not at the next poll
        output.extend(proc.communicate())
        ended.append(time.perf_counter())
        done.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    peak = peak_pss = 0
    handle = psutil.Process(proc.pid)
    while not done.is_set():
        try:
            tree = [p for p in (handle, *handle.children(recursive=True)) if p.is_running()]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
            peak_pss = max(peak_pss, sum(p.memory_full_info().pss for p in tree))  # smaps_rollup
        except psutil.Error:
            pass
        done.wait(POLL_SECONDS)
    waiter.join()
    seconds = ended[0] - started
    out, err = output
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed with exit code {proc.returncode}:\n{err[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # every waited-for descendant, worker included
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "peak_pss_mb": round(peak_pss / 2**20, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}


def start_api(server: str, records: int, per_page: int) -> tuple[subprocess.Popen[str], str]:
    """The API in a process of its own; returns it and its base URL (printed once it is ready)."""
    if server == "memory":
        argv = [sys.executable, str(ROOT / "bench" / "memory_api.py"), "--records", str(records),
                "--per-page", str(per_page), "--date", DAY]
    else:
        argv = [sys.executable, "-m", "scheduler.sample.api", "--port", "0", "--records-per-day", str(records),
                "--per-page", str(per_page)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"the {server} API did not start (exit code {proc.wait()})")
    return proc, url


def dlt_python(requested: str | None) -> str | None:
    """An interpreter that imports dlt: ``--dlt-python`` or this one; None when neither does."""
    for candidate in ([requested] if requested else [sys.executable]):
        check = subprocess.run([candidate, "-c", "import dlt"], capture_output=True)
        if check.returncode == 0:
            return candidate
    return None


def bench_config(directory: Path) -> Path:
    """``config/jobs.yaml`` with daily_sales' rate limit removed (the sample API has no limit)."""
    doc = yaml.safe_load((ROOT / "config" / "jobs.yaml").read_text())
    job = doc["jobs"]["daily_sales"]
    job["source"].pop("rate_limit", None)
    job["retries"] = 0
    doc["jobs"] = {"daily_sales": job}  # other jobs (and their `after:` links) play no part here
    path = directory / "jobs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def compile_bytecode() -> None:
    """Byte-compile the package and the shipped hooks (untimed), as an install does: with
    ``PYTHONDONTWRITEBYTECODE`` set, every run would otherwise compile them from source."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "scheduler"), str(ROOT / "jobs")], env=env,
                   check=True, capture_output=True)


def check_lower_bound(arrow_file: Path, partition: Path) -> None:
    """The arrow leg is a lower bound only while it does ours' work: it must have written the
    rows and values ours wrote (in any order); stops the benchmark when it has not."""
    import pyarrow.parquet as pq

    ours = pq.ParquetFile(next(partition.glob("*.parquet"))).read().sort_by("order_id")
    arrow = pq.ParquetFile(arrow_file).read().sort_by("order_id")
    if not arrow.equals(ours):
        raise SystemExit(f"the arrow leg wrote other rows than ours ({arrow.num_rows} against {ours.num_rows}): "
                         "it is no lower bound for these pages")
    print(f"arrow leg: the same {ours.num_rows} rows and values as ours", file=sys.stderr)


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs (the load average too)."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--per-page", type=int, default=1_000)
    parser.add_argument("--legs", default="floor,naive,arrow,ours,dlt",
                        help="comma-separated subset of floor,naive,arrow,ours,dlt")
    parser.add_argument("--server", choices=("memory", "sample"), default="memory",
                        help="memory: pages pre-rendered, served from memory (default); sample: the sample API")
    parser.add_argument("--dlt-python", default=None, help="interpreter with dlt installed, for the dlt leg")
    parser.add_argument("--cold-config", action="store_true",
                        help="measure ours without a cached compiled config (the first call for a config)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the legs this many times, interleaved, and report each leg's median run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    legs = args.legs.split(",")
    pages = -(-args.records // args.per_page)
    dlt = dlt_python(args.dlt_python) if "dlt" in legs else None
    if "dlt" in legs and dlt is None:
        print("dlt leg skipped: dlt is not importable (pip install 'dlt[parquet,filesystem]' in a bench venv, "
              "then pass --dlt-python VENV/bin/python)", file=sys.stderr)
    compile_bytecode()
    api, url = start_api(args.server, args.records, args.per_page)
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
            work = Path(tmp)
            common = [url, str(pages), str(args.per_page), DAY]
            env = {**os.environ, "SALES_API_URL": url, "PYTHONPATH": str(ROOT)}
            env.pop("SALES_API_TOKEN", None)
            config = bench_config(work)
            if "ours" in legs and not args.cold_config:  # untimed: the compiled config is then cached
                subprocess.run([sys.executable, "-m", "scheduler", "validate", "--config", str(config),
                                "--data-dir", str(work / "data")], env=env, cwd=ROOT, check=True, capture_output=True)
            for _ in range(args.repeat):
                if "floor" in legs or "ours" in legs:
                    runs.setdefault("floor", []).append(measure([sys.executable, "-c", FLOOR, *common]))
                if "naive" in legs:
                    runs.setdefault("naive", []).append(
                        measure([sys.executable, "-c", NAIVE, *common, str(work / "naive.parquet")]))
                if "arrow" in legs:
                    runs.setdefault("arrow", []).append(
                        measure([sys.executable, "-c", ARROW, *common, str(work / "arrow.parquet")], env))
                if "ours" in legs:
                    runs.setdefault("ours", []).append(measure(
                        [sys.executable, "-m", "scheduler", "run-job", "daily_sales", "--date", DAY, "--config",
                         str(config), "--data-dir", str(work / "data"), "--log-level", "warning"], env))
                if dlt is not None:
                    runs.setdefault("dlt", []).append(measure([dlt, "-c", DLT, *common, str(work / "dlt")]))
            if "arrow" in legs and "ours" in legs:
                check_lower_bound(work / "arrow.parquet", work / "data" / "sales" / f"date={DAY}")
    finally:
        api.terminate()
        api.wait(timeout=10)
    results = {leg: median_run(leg_runs) for leg, leg_runs in runs.items()}
    floor = results.get("floor", {}).get("seconds")
    floor_cpu = results.get("floor", {}).get("cpu_seconds")
    print(f"records={args.records} per_page={args.per_page} pages={pages} server={args.server} cpus={os.cpu_count()} "
          f"config={'cold' if args.cold_config else 'cached'} repeat={args.repeat} (medians)")
    print(f"{'leg':<6} {'seconds':>8} {'x floor':>8} {'cpu s':>8} {'x floor':>8} {'peak RSS MB':>12} "
          f"{'peak PSS MB':>12} {'load 1m':>8}")
    for leg, r in results.items():
        r["x_floor"] = round(r["seconds"] / floor, 2) if floor else None  # type: ignore[assignment]
        r["cpu_x_floor"] = round(r["cpu_seconds"] / floor_cpu, 2) if floor_cpu else None  # type: ignore[assignment]
        ratio, cpu_ratio = (f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("x_floor", "cpu_x_floor"))
        print(f"{leg:<6} {r['seconds']:>8.2f} {ratio:>8} {r['cpu_seconds']:>8.2f} {cpu_ratio:>8} "
              f"{r['peak_rss_mb']:>12.1f} {r['peak_pss_mb']:>12.1f} {r['load_avg_1m']:>8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": args.records, "per_page": args.per_page, "server": args.server,
                                         **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
