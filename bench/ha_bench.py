"""Replicas on PostgreSQL: failover time, and fire lateness of 3 replicas against one on SQLite.

    python bench/ha_bench.py [--quick] [--failovers 10] [--lease-ttl 5] [--lateness-jobs 1000]

Both on real ``scheduler run`` processes and a private PostgreSQL cluster (``initdb`` in a temp
dir, as the tests start it; PostgreSQL binaries required).

1. Failover: two replicas share the database (``state.lease_ttl`` = ``--lease-ttl``).  Each round
   asks one replica (over its HTTP API) to run a job that sleeps, waits for the run to start,
   SIGKILLs that replica, and measures from the kill to the survivor's "run started" of the same
   run (the slot resumed after the lease ran out).  The killed replica is restarted and given a
   full TTL of connectivity before the next round.  Reported: median, min and max of the rounds.
2. Fire lateness, the measurement of ``bench/core_bench.py`` (``--lateness-jobs`` jobs
   ``"S * * * * *"`` with ``jitter: 1s``, the "child started" timestamp minus the fire time over a
   ``--lateness-window``), once for one replica on SQLite and once for three replicas on one
   PostgreSQL database (whichever replica claims a slot runs it), in the same run.

Prints markdown tables and writes ``bench/results/ha.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "state"))

import core_bench as core  # noqa: E402 - after the path set-up above
import pgcluster  # noqa: E402


class Replica(core.DaemonProc):
    """A ``scheduler run`` whose config adds a shared PostgreSQL store (and, optionally, the API)."""

    def __init__(self, root: Path, name: str, jobs: dict[str, dict[str, Any]], url: str, lease_ttl: float,
                 api: bool = False, log_level: str = "info") -> None:
        self.url, self.lease_ttl, self.api = url, lease_ttl, api
        super().__init__(root, name, jobs, log_level)
        self.port = 0
        if api:
            core.wait_until(lambda: self.seen("http endpoint listening"), 60, what=f"{name} endpoint")
            listening = next(e for e in self.events() if e.get("event") == "http endpoint listening")
            self.port = int(listening["listen"].rpartition(":")[2])

    def write_config(self, jobs: dict[str, dict[str, Any]]) -> None:
        config: dict[str, Any] = {"state": {"backend": "postgres", "url": self.url, "lease_ttl": f"{self.lease_ttl}s"},
                                  "jobs": jobs}
        if self.api:
            config["http"] = {"listen": "127.0.0.1:0", "api_token": "bench"}
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=1) + "\n")
        tmp.replace(self.config)

    def run(self, job: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/jobs/{job}/run", method="POST",
                                         headers={"Authorization": "Bearer bench"})
        urllib.request.urlopen(request, timeout=10).close()


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


# --- 1. failover -------------------------------------------------------------------------------
def bench_failover(root: Path, cluster: pgcluster.Cluster, args: argparse.Namespace) -> dict[str, Any]:
    url = cluster.url(cluster.create_database())
    pids = root / "failover-pids"
    jobs = {f"hold{i}": {"kind": "command", "every": "1d", "catchup": "latest",
                         "shell": f"echo $$$$ >> {pids}; sleep 600"} for i in range(args.failovers)}
    live = [Replica(root, f"fo-{n}", jobs, url, args.lease_ttl, api=True) for n in ("a", "b")]
    lives = 2
    times: list[float] = []
    try:
        time.sleep(args.lease_ttl)  # a survivor expires others' leases after a TTL of connectivity
        for i in range(args.failovers):
            holder, survivor = live[i % 2], live[1 - i % 2]
            holder.run(f"hold{i}")
            def started(holder: Replica = holder, job: str = f"hold{i}") -> int | None:
                return next((e["run_id"] for e in holder.events() if e.get("event") == "run started"
                             and e.get("job") == job), None)

            core.wait_until(started, 60, what="the run to start")
            run_id = started()
            killed = time.time()
            holder.popen.send_signal(signal.SIGKILL)
            holder.popen.wait(30)

            def resumed(survivor: Replica = survivor, run_id: int = run_id) -> dict[str, Any] | None:
                return next((e for e in survivor.events() if e.get("event") == "run started"
                             and e.get("run_id") == run_id), None)

            core.wait_until(resumed, args.lease_ttl * 4 + 30, interval=0.05, what="the survivor's rerun")
            event = resumed()
            assert event is not None
            times.append(stamp(event) - killed)
            print(f"  failover {i + 1}/{args.failovers}: {times[-1]:.2f} s", flush=True)
            holder.stop()
            lives += 1
            live[i % 2] = Replica(root, f"fo-{lives}", jobs, url, args.lease_ttl, api=True)
            time.sleep(args.lease_ttl)  # the new replica's TTL of connectivity, as in a steady state
    finally:
        for replica in live:
            replica.stop()
        if pids.exists():
            for pid in pids.read_text().split():
                try:
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass
    return {"lease_ttl_s": args.lease_ttl, "rounds": len(times), "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "all_s": [round(t, 3) for t in times]}


# --- 2. lateness -------------------------------------------------------------------------------
def lateness_of(daemons: list[core.DaemonProc], expected: dict[tuple[str, datetime], datetime]) -> dict[str, Any]:
    """Lateness of every expected fire, from whichever daemon ran the slot (the first child start)."""
    started: dict[tuple[str, datetime], datetime] = {}
    runs = 0
    for daemon in daemons:
        slots: dict[int, tuple[str, datetime]] = {}
        for e in daemon.events():
            if e.get("event") == "run started":
                slots[e["run_id"]] = (e["job"], datetime.fromisoformat(e["slot"]))
            elif e.get("event") == "child started" and e.get("attempt", 1) == 1 and e["run_id"] in slots:
                key = slots[e["run_id"]]
                runs += key in expected
                when = datetime.fromisoformat(e["timestamp"])
                started[key] = min(started.get(key, when), when)
    late = [(started[key] - fire).total_seconds() * 1000 for key, fire in expected.items() if key in started]
    return {"expected_fires": len(expected), "missed_fires": len(expected) - len(late),
            "extra_runs": runs - len(late), **core.summary_ms(late)}


def bench_lateness(root: Path, cluster: pgcluster.Cluster, args: argparse.Namespace) -> dict[str, Any]:
    jobs = core.lateness_jobs(args.lateness_jobs)
    schedules = core.schedules_of(jobs)
    out: dict[str, Any] = {"jobs": len(jobs), "window_s": args.lateness_window}
    url = cluster.url(cluster.create_database())
    for leg in ("sqlite_1", "postgres_3"):
        if leg == "sqlite_1":
            daemons: list[core.DaemonProc] = [core.DaemonProc(root, "late-sqlite", jobs, log_level="debug")]
        else:
            daemons = [Replica(root, f"late-pg-{n}", jobs, url, 30, log_level="debug") for n in "abc"]
        try:
            time.sleep(args.warmup)  # the start-up burst (every job's last slot) drains
            t0 = math.ceil(time.time()) + 1.0
            start = datetime.fromtimestamp(t0, UTC)
            end = start + timedelta(seconds=args.lateness_window)
            expected = core.fire_times(schedules, start, end)
            core.sleep_until(end.timestamp())
            time.sleep(args.tail)
        finally:
            for daemon in daemons:
                daemon.stop()
        out[leg] = lateness_of(daemons, expected)
        print(f"  {leg}: p99 {out[leg]['p99_ms']:.1f} ms, missed {out[leg]['missed_fires']}, "
              f"extra {out[leg]['extra_runs']}", flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    lines = []
    fo = results.get("failover")
    if fo:
        lines += ["| metric | value |", "|---|---|",
                  f"| failover, SIGKILL of the holder to the survivor's rerun, median of {fo['rounds']} "
                  f"(lease_ttl {fo['lease_ttl_s']:g} s) | {fo['median_s']:.2f} s (min {fo['min_s']:.2f}, "
                  f"max {fo['max_s']:.2f}) |", ""]
    late = results.get("lateness")
    if late:
        lines += ["| fire lateness, 1 fire per job per minute | p50 | p95 | p99 | max | missed | run twice |",
                  "|---|---|---|---|---|---|---|"]
        for leg, label in (("sqlite_1", "1 replica, SQLite"), ("postgres_3", "3 replicas, one PostgreSQL")):
            r = late[leg]
            lines.append(f"| {label}, {late['jobs']} jobs, {late['window_s']:.0f} s | {r['p50_ms']:.1f} ms | "
                         f"{r['p95_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | "
                         f"{r['missed_fires']} | {r['extra_runs']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 failovers, 200 jobs, 20 s window")
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--lateness-jobs", type=int, default=1000)
    parser.add_argument("--lateness-window", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--tail", type=float, default=5.0)
    parser.add_argument("--only", choices=["failover", "lateness"], action="append")
    args = parser.parse_args()
    if args.quick:
        args.failovers, args.lateness_jobs, args.lateness_window = 3, 200, 20.0
    reason = pgcluster.available()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    cluster = pgcluster.Cluster().start()
    results: dict[str, Any] = {"date": datetime.now(UTC).isoformat(), "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory(prefix="ha-bench-") as tmp:
            parts = args.only or ["failover", "lateness"]
            if "failover" in parts:
                print(f"failover: {args.failovers} rounds, lease_ttl {args.lease_ttl:g} s", flush=True)
                results["failover"] = bench_failover(Path(tmp), cluster, args)
            if "lateness" in parts:
                print(f"lateness: {args.lateness_jobs} jobs, {args.lateness_window:.0f} s window", flush=True)
                results["lateness"] = bench_lateness(Path(tmp), cluster, args)
    finally:
        cluster.stop()
    table = report(results)
    print(table)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ha.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
