"""Daemon overhead: memory, idle CPU and fire lateness, each against a baseline from the same run.

    python bench/core_bench.py [--quick] [--runs 1000] [--cpu-window 60] [--lateness-window 60]
    python bench/core_bench.py --only per_run [--run-window 40] [--code /path/to/other/checkout]
    python bench/core_bench.py --only run_job [--code /path/to/other/checkout]
    python bench/core_bench.py --web --only memory --only lateness   # with the web console loaded
    python bench/core_bench.py --http --only lateness                 # the endpoint on, no page loaded

Three measurements, every one of them on real ``scheduler run`` processes started from a config
and data dir in a temporary directory and stopped with SIGTERM:

1. Memory (RSS and USS of the daemon process only, children excluded): right after start with one
   job scheduled far away, then after ``--runs`` short runs (``--mem-jobs`` jobs firing every
   second, added and removed again by a SIGHUP reload of the same process) once it is quiet again.
   Baseline: a bare ``python3 -c 'import time; time.sleep(600)'`` interpreter.  Goal: at most
   35 MB and flat.
2. Idle CPU: user+sys seconds of a daemon with a few far-away jobs over ``--cpu-window`` seconds,
   as a percentage of the window.  Baseline: the bare interpreter over the same window.  Goal: at
   most 0.05 %.
3. Fire lateness: ``--lateness-jobs`` jobs ``"S * * * * *"`` (S = i % 60) with ``jitter: 1s``;
   lateness is the "child started" log timestamp minus the job's fire time (slot plus
   ``Schedule.jitter_for``), over every fire time in one ``--lateness-window`` after a warm-up.
   Baseline: a minimal Python loop that sleeps until the same fire times (shifted to the next
   window) and ``subprocess.Popen``s ``true``.  Goal: p99 at most 20 ms.

4. Per-run overhead (``--only per_run``): CPU-seconds per run of the daemon *and its whole process
   tree* (children it reaped, the fork server and the runs it forked and reaped, read from
   ``/proc`` as own + reaped-children times at both ends of a ``--run-window``), for
   ``--run-jobs`` trivial ``python`` jobs (a function returning None), ``command`` jobs
   (``true``) and ``ingest`` jobs (one page of ``--ingest-records`` records from the sample API
   on 127.0.0.1 to Parquet), each ``every: 2s``; with the slots skipped by
   ``concurrency: forbid`` because a run could not start (or end) in time, also at
   ``--many-jobs`` python jobs.  Goal: at most 30 ms of CPU per trivial python run.
   ``--code DIR`` runs the daemons from another checkout (``PYTHONPATH``), for before/after
   figures from one session.  The 1-minute load average is reported with each figure.
5. ``run-job`` (``--only run_job``): wall and CPU seconds of ``scheduler run-job`` for a trivial
   ``command`` job (``true``; also at log level ``info``, and from a config holding a secret,
   whose cache entry is sealed with scrypt) and a trivial ``python`` job, median of
   ``--run-job-repeats`` calls after a first one that fills the config cache.  Baseline:
   ``python -c pass``.  Goal: the command job under 0.3 s.

Prints a markdown table and writes the figures to ``bench/results/core.json``.  Exit code 1 when a
goal is missed.  ``--quick`` is a smoke run of about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.schedule import Schedule  # noqa: E402 - after the path set-up above

MB = 1024 * 1024
FAR_SCHEDULES = ["0 0 1 1 *", "30 4 29 2 *", "15 3 1 7 *"]  # New Year, leap day, July: never within a run
JITTER = timedelta(seconds=1)

GOAL_RSS_MB = 35.0
GOAL_IDLE_CPU_PCT = 0.05
GOAL_P99_MS = 20.0
GOAL_PY_RUN_CPU_MS = 30.0
GOAL_RUN_JOB_S = 0.3

# A minimal scheduler: sleep until each fire time, Popen ``true``, note how late Popen returned.
MINIMAL_SCHEDULER = r"""
import json, subprocess, sys, time
fires = sorted(json.load(sys.stdin))
late, procs = [], []
for fire in fires:
    delay = fire - time.time()
    if delay > 0:
        time.sleep(delay)
    procs.append(subprocess.Popen(["true"]))
    late.append(time.time() - fire)
    procs = [p for p in procs if p.poll() is None]
for p in procs:
    p.wait()
json.dump(late, sys.stdout)
"""


# --- helpers ---------------------------------------------------------------------------------------
WEB_TOKEN = "core-bench-web-token"
WEB: dict[str, bool] = {"on": False, "http": False}  # --web / --http: daemons serve the endpoint (--web: and pages)


def yaml_config(jobs: dict[str, dict[str, Any]]) -> str:
    """The config text (JSON is YAML; ``command`` stays a list of strings)."""
    config: dict[str, Any] = {"jobs": jobs}
    if WEB["on"] or WEB["http"]:
        config["http"] = {"listen": "127.0.0.1:0", "api_token": WEB_TOKEN}
    return json.dumps(config, indent=1) + "\n"


def load_pages(daemon: DaemonProc) -> int:
    """With ``--web``: open the job list, a job page and a run page as an operator would (Bearer
    token); returns how many pages answered 200."""
    import urllib.request

    listen = next(e["listen"] for e in daemon.events() if e.get("event") == "http endpoint listening")
    db = daemon.data / ".scheduler" / "state.db"
    run_id = None
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT id FROM runs ORDER BY id LIMIT 1").fetchone()
            run_id = row[0] if row else None
        finally:
            conn.close()
    first_job = next(iter(json.loads(daemon.config.read_text())["jobs"]))
    paths = ["/", f"/job/{first_job}"] + ([f"/run/{run_id}"] if run_id else [])
    ok = 0
    for path in paths:
        request = urllib.request.Request(f"http://{listen}{path}", headers={"Authorization": f"Bearer {WEB_TOKEN}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            ok += response.status == 200
    return ok


def command_job(schedule: str, jitter: str | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {"kind": "command", "schedule": schedule, "command": ["true"]}
    if jitter:
        job["jitter"] = jitter
    return job


def far_jobs(count: int) -> dict[str, dict[str, Any]]:
    return {f"far{i}": command_job(FAR_SCHEDULES[i % len(FAR_SCHEDULES)]) for i in range(count)}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in [0, 100])."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def cpu_seconds(proc: psutil.Process) -> float:
    """User+sys CPU of the process itself (its threads, not its children)."""
    t = proc.cpu_times()
    return t.user + t.system


def sched_ns(pid: int) -> int:
    """On-CPU nanoseconds summed over the live threads (/proc/PID/task/*/schedstat), finer than ticks."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def memory(proc: psutil.Process) -> dict[str, float]:
    info = proc.memory_full_info()
    return {"rss_mb": info.rss / MB, "uss_mb": info.uss / MB, "threads": proc.num_threads()}


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def sleep_until(epoch: float) -> None:
    while (delay := epoch - time.time()) > 0:
        time.sleep(min(delay, 0.5))


class Bare:
    """The baseline interpreter: ``python3 -c 'import time; time.sleep(600)'``."""

    def __init__(self) -> None:
        self.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.proc = psutil.Process(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)


class DaemonProc:
    """One ``scheduler run`` with its own config and data dir under ``root``."""

    def __init__(self, root: Path, name: str, jobs: dict[str, dict[str, Any]], log_level: str = "info",
                 env: dict[str, str] | None = None) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.config = self.dir / "config.yaml"
        self.data = self.dir / "data"
        self.log_path = self.dir / "daemon.log"
        self.write_config(jobs)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.dir / "daemon.err", "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run", "--config", str(self.config), "--data-dir", str(self.data),
             "--log-level", log_level, "--log-format", "json"],
            cwd=self.dir, stdout=self._log, stderr=self._err, stdin=subprocess.DEVNULL, env=env,
        )
        self.proc = psutil.Process(self.popen.pid)
        self._offset = 0
        self._events: list[dict[str, Any]] = []
        wait_until(lambda: self.seen("scheduler started") or self.popen.poll() is not None, 60,
                   what=f"{name} to start")
        if self.popen.poll() is not None:
            raise RuntimeError(f"{name} exited at start: {(self.dir / 'daemon.err').read_text()[-2000:]}")

    def write_config(self, jobs: dict[str, dict[str, Any]]) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml_config(jobs))
        tmp.replace(self.config)

    def events(self) -> list[dict[str, Any]]:
        """Log events so far (complete lines only)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            try:
                self._events.append(json.loads(line))
            except ValueError:
                pass
        self._offset += end
        return self._events

    def seen(self, event: str, count: int = 1) -> bool:
        return sum(1 for e in self.events() if e.get("event") == event) >= count

    def reload(self, jobs: dict[str, dict[str, Any]]) -> None:
        before = sum(1 for e in self.events() if e.get("event") == "config reloaded")
        self.write_config(jobs)
        self.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: self.seen("config reloaded", before + 1), 60, what="config reload")

    def runs(self) -> tuple[int, int]:
        """(finished, running) rows of the state db's ``runs`` table."""
        db = self.data / ".scheduler" / "state.db"
        if not db.exists():
            return 0, 0
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = dict(conn.execute("SELECT status = 'running', COUNT(*) FROM runs GROUP BY 1").fetchall())
        except sqlite3.OperationalError:
            return 0, 0
        finally:
            conn.close()
        return rows.get(0, 0), rows.get(1, 0)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        self._err.close()
        return self.popen.returncode


# --- 1. memory -------------------------------------------------------------------------------------
def bench_memory(root: Path, bare: Bare, args: argparse.Namespace) -> dict[str, Any]:
    idle_jobs = far_jobs(1)
    daemon = DaemonProc(root, "memory", idle_jobs)
    try:
        time.sleep(args.settle)
        start = memory(daemon.proc)
        base = memory(bare.proc)
        web: dict[str, Any] = {}
        if WEB["on"]:
            web["pages_ok"] = load_pages(daemon)
            time.sleep(args.settle)
            web["after_first_pages"] = memory(daemon.proc)
        busy = dict(idle_jobs)
        busy.update({f"tick{i:02d}": command_job("* * * * * *") for i in range(args.mem_jobs)})
        began = time.monotonic()
        daemon.reload(busy)
        samples: list[tuple[int, float, float]] = []
        checkpoints: dict[int, dict[str, float]] = {}
        while True:
            finished, _ = daemon.runs()
            mem = memory(daemon.proc)
            samples.append((finished, mem["rss_mb"], mem["uss_mb"]))
            for mark in (args.runs // 4, args.runs // 2, 3 * args.runs // 4):
                if finished >= mark and mark not in checkpoints:
                    checkpoints[mark] = mem
            if finished >= args.runs:
                break
            if time.monotonic() - began > args.runs / args.mem_jobs * 4 + 60:
                raise TimeoutError(f"only {finished} of {args.runs} runs after {time.monotonic() - began:.0f}s")
            time.sleep(0.5)
        busy_seconds = time.monotonic() - began
        daemon.reload(idle_jobs)
        threads_idle = start["threads"]
        wait_until(lambda: daemon.runs()[1] == 0 and daemon.proc.num_threads() <= threads_idle, 60,
                   what="quiescence after the runs")
        time.sleep(args.settle)
        after = memory(daemon.proc)
        finished, running = daemon.runs()
    finally:
        code = daemon.stop()
    return {
        "start": start, "after": after, "baseline": base, "runs": finished, "still_running": running,
        "jobs": args.mem_jobs, "busy_seconds": round(busy_seconds, 1),
        "peak_rss_mb": max(s[1] for s in samples), "peak_uss_mb": max(s[2] for s in samples),
        "checkpoints": {str(k): v for k, v in sorted(checkpoints.items())}, "exit_code": code, "web": web,
    }


# --- 2. idle CPU -----------------------------------------------------------------------------------
def bench_idle_cpu(root: Path, bare: Bare, args: argparse.Namespace) -> dict[str, Any]:
    daemon = DaemonProc(root, "idle", far_jobs(3))
    try:
        time.sleep(args.settle)
        procs = {"daemon": daemon.proc, "baseline": bare.proc}
        t0 = time.monotonic()
        cpu0 = {k: cpu_seconds(p) for k, p in procs.items()}
        ns0 = {k: sched_ns(p.pid) for k, p in procs.items()}
        ctx0 = {k: sum(p.num_ctx_switches()) for k, p in procs.items()}
        time.sleep(args.cpu_window)
        window = time.monotonic() - t0
        out: dict[str, Any] = {"window_s": round(window, 2)}
        for k, p in procs.items():
            cpu = cpu_seconds(p) - cpu0[k]
            out[k] = {
                "cpu_s": round(cpu, 4), "cpu_pct": 100.0 * cpu / window,
                "schedstat_pct": 100.0 * (sched_ns(p.pid) - ns0[k]) / 1e9 / window,
                "ctx_switches": sum(p.num_ctx_switches()) - ctx0[k],
            }
    finally:
        out_code = daemon.stop()
    out["exit_code"] = out_code
    return out


# --- 3. fire lateness ------------------------------------------------------------------------------
def lateness_jobs(count: int) -> dict[str, dict[str, Any]]:
    return {f"j{i:04d}": command_job(f"{i % 60} * * * * *", "1s") for i in range(count)}


def schedules_of(jobs: dict[str, dict[str, Any]]) -> dict[str, Schedule]:
    """The jobs' schedules, built as the config loader builds them."""
    return {name: Schedule(cron=spec["schedule"], tz="UTC", jitter=JITTER) for name, spec in jobs.items()}


def fire_times(schedules: dict[str, Schedule], start: datetime, end: datetime) -> dict[tuple[str, datetime], datetime]:
    """Every (job, slot) -> fire time with start <= fire < end."""
    out = {}
    for name, schedule in schedules.items():
        for slot in schedule.iter_after(start - JITTER - timedelta(microseconds=1)):
            fire = slot + schedule.jitter_for(name, slot)
            if fire >= end:
                break
            if fire >= start:
                out[(name, slot)] = fire
    return out


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99), "max_ms": max(values) if values else math.nan,
            "min_ms": min(values) if values else math.nan}


def bench_lateness(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    jobs = lateness_jobs(args.lateness_jobs)
    schedules = schedules_of(jobs)
    daemon = DaemonProc(root, "lateness", jobs, log_level="debug")
    try:
        # A fresh state fires every job's last slot at once (it is within the on-time window);
        # let that burst drain before the measured window starts.
        wait_until(lambda: daemon.runs()[0] >= len(jobs), 300, interval=0.25, what="the start-up burst")
        if WEB["on"]:
            load_pages(daemon)  # the web modules are loaded in the daemon during the window
        time.sleep(args.warmup)
        t0 = math.ceil(time.time()) + 1.0
        start = datetime.fromtimestamp(t0, UTC)
        end = start + timedelta(seconds=args.lateness_window)
        expected = fire_times(schedules, start, end)
        sleep_until(t0)
        cpu0, wall0 = cpu_seconds(daemon.proc), time.monotonic()
        sleep_until(end.timestamp())
        cpu_pct = 100.0 * (cpu_seconds(daemon.proc) - cpu0) / (time.monotonic() - wall0)
        time.sleep(args.tail)
    finally:
        code = daemon.stop()
    slots: dict[int, tuple[str, datetime, str]] = {}
    started: dict[tuple[str, datetime], datetime] = {}
    children: list[tuple[int, datetime, int]] = []
    for e in daemon.events():
        if e.get("event") == "run started":
            slots[e["run_id"]] = (e["job"], datetime.fromisoformat(e["slot"]), e.get("trigger", ""))
        elif e.get("event") == "child started" and e.get("attempt", 1) == 1:
            children.append((e["run_id"], datetime.fromisoformat(e["timestamp"]), e["pid"]))
    for run_id, stamp, _pid in children:
        if run_id in slots:
            job, slot, _trigger = slots[run_id]
            started.setdefault((job, slot), stamp)
    late = {key: (started[key] - fire).total_seconds() * 1000 for key, fire in expected.items() if key in started}
    worst = sorted(late.items(), key=lambda kv: kv[1], reverse=True)[:5]
    # Lateness by the second of the window: shows whether it is spread out or bunched.
    per_second: dict[int, list[float]] = {}
    for (job, slot), ms in late.items():
        per_second.setdefault(int((expected[(job, slot)] - start).total_seconds()), []).append(ms)
    result = {
        "jobs": len(jobs), "window": [start.isoformat(), end.isoformat()], "expected_fires": len(expected),
        "missed_fires": len(expected) - len(late), **summary_ms(list(late.values())),
        "daemon_cpu_pct_during_window": cpu_pct, "exit_code": code,
        "worst": [{"job": j, "slot": s.isoformat(), "late_ms": round(ms, 2)} for (j, s), ms in worst],
        "per_second_p99_ms": {k: round(percentile(v, 99), 2) for k, v in sorted(per_second.items())},
    }
    result["baseline"] = bench_minimal_scheduler(schedules, args)
    return result


def bench_minimal_scheduler(schedules: dict[str, Schedule], args: argparse.Namespace) -> dict[str, Any]:
    t0 = math.ceil(time.time()) + 1.0
    start = datetime.fromtimestamp(t0, UTC)
    fires = fire_times(schedules, start, start + timedelta(seconds=args.lateness_window))
    out = subprocess.run([sys.executable, "-c", MINIMAL_SCHEDULER],
                         input=json.dumps([f.timestamp() for f in fires.values()]),
                         capture_output=True, text=True, check=True, timeout=args.lateness_window + 120)
    late = [s * 1000 for s in json.loads(out.stdout)]
    return {"window": start.isoformat(), **summary_ms(late)}


# --- 4. per-run overhead ---------------------------------------------------------------------------
TRIVIAL_MODULE = "def noop(ctx):\n    return None\n"


def tree_cpu(root_pid: int) -> float:
    """User+sys of ``root_pid`` and every live descendant, each with its reaped children's times.

    Between two readings the difference is exact for every process reaped inside the tree (the
    daemon reaps its children and the fork server; the fork server reaps the runs it forked): a
    process that ended meanwhile moved its times into its parent's reaped-children counters."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_rss(root_pid: int) -> dict[str, float]:
    """RSS of the daemon and of its fork server (0 when there is none), in MB."""
    out = {"daemon_rss_mb": 0.0, "forkserver_rss_mb": 0.0}
    try:
        root = psutil.Process(root_pid)
        out["daemon_rss_mb"] = root.memory_info().rss / MB
        for child in root.children():
            if "scheduler.forkserver.server" in " ".join(child.cmdline()):
                out["forkserver_rss_mb"] = child.memory_info().rss / MB
    except psutil.NoSuchProcess:
        pass
    return out


def children_cpu() -> float:
    """User+sys seconds of this process's reaped children (microsecond resolution)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_calls(argv: list[str], calls: int, **popen: Any) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of ``calls`` runs of ``argv`` (the command and its children)."""
    samples = []
    for _ in range(calls):
        before = children_cpu()
        t0 = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **popen)
        samples.append((time.monotonic() - t0, children_cpu() - before))
    return samples


# run-job legs: (label, job, config file, log level); the config with a secret has its cache
# entry's key derived with scrypt, the other with one SHA-256 (see scheduler/config/cache.py)
RUN_JOB_LEGS = [
    ("noop_command", "noop_command", "config.yaml", "warning"),
    ("noop_command, log level info", "noop_command", "config.yaml", "info"),
    ("noop_command, config with a secret", "noop_command", "secret/config.yaml", "warning"),
    ("noop_python", "noop_python", "config.yaml", "warning"),
]


def bench_run_job(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Wall and CPU seconds (the command and its children) of ``run-job`` for trivial jobs.

    The first call of each leg fills the config cache (where there is one) and is reported
    apart; the median of the next ``--run-job-repeats`` calls is the figure."""
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code), env.get("PYTHONPATH")]))
    env["SCHEDULER_CACHE_DIR"] = str(root / "run-job-cache")
    work = root / "run-job"
    (work / "benchjobs").mkdir(parents=True)
    (work / "benchjobs" / "__init__.py").write_text("")
    (work / "benchjobs" / "trivial.py").write_text(TRIVIAL_MODULE)
    (work / "config.yaml").write_text(yaml_config({
        "noop_command": {"kind": "command", "schedule": "0 0 1 1 *", "command": ["true"]},
        "noop_python": {"kind": "python", "schedule": "0 0 1 1 *", "function": "benchjobs.trivial:noop"},
    }))
    (work / "secret").mkdir()
    (work / "secret" / "token").write_text("bench-token-5c0f2a91\n")
    (work / "secret" / "config.yaml").write_text(yaml_config({
        "noop_command": {"kind": "command", "schedule": "0 0 1 1 *", "command": ["true"],
                         "env": {"TOKEN_file": "token"}},
    }))
    out: dict[str, Any] = {"code": str(args.code or ROOT), "legs": {}}
    for label, job, config, level in RUN_JOB_LEGS:
        samples = timed_calls([sys.executable, "-m", "scheduler", "run-job", job, "--config", config,
                               "--data-dir", "data", "--log-level", level], args.run_job_repeats + 1,
                              cwd=work, env=env)
        rest = samples[1:]
        out["legs"][label] = {"first_wall_s": samples[0][0], "wall_s": percentile([w for w, _ in rest], 50),
                              "cpu_s": percentile([c for _, c in rest], 50),
                              "loadavg_1m": round(os.getloadavg()[0], 2)}
    base = timed_calls([sys.executable, "-c", "pass"], args.run_job_repeats)
    out["python_c_pass"] = {"wall_s": percentile([w for w, _ in base], 50),
                            "cpu_s": percentile([c for _, c in base], 50)}
    return out


def overhead_jobs(kind: str, count: int, base_url: str, records: int) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for i in range(count):
        if kind == "command":
            jobs[f"c{i:03d}"] = {"kind": "command", "every": "2s", "command": ["true"]}
        elif kind == "python":
            jobs[f"p{i:03d}"] = {"kind": "python", "every": "2s", "function": "benchjobs.trivial:noop"}
        else:
            jobs[f"i{i:03d}"] = {
                "kind": "ingest", "every": "2s",
                "source": {"base_url": base_url, "path": "/v1/sales",
                           "params": {"date": "{logical_date}", "per_page": records}, "records": "data"},
                "transform": [{"select": ["order_id", "sku"]}],
                "sink": {"dataset": f"bench_ingest_{i:03d}",
                         "schema": {"order_id": "string", "sku": "string"}},
            }
    return jobs


def count_events(daemon: DaemonProc, name: str) -> int:
    return sum(1 for e in daemon.events() if e.get("event") == name)


def bench_run_overhead(root: Path, args: argparse.Namespace, kind: str, count: int, base_url: str,
                       preload: str = "") -> dict[str, Any]:
    """CPU per run of the daemon's whole tree for ``count`` trivial ``kind`` jobs every 2 s."""
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.code), env.get("PYTHONPATH")]))
    if preload:
        env["SCHEDULER_FORKSERVER_PRELOAD"] = preload
    name = f"overhead-{kind}-{count}{'-preload' if preload else ''}"
    package = root / f"{name}-code" / "benchjobs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "trivial.py").write_text(TRIVIAL_MODULE)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package.parent), env.get("PYTHONPATH")]))
    daemon = DaemonProc(root, name, overhead_jobs(kind, count, base_url, args.ingest_records), env=env)
    try:
        # Warm-up: every job has finished a run (and the fork server, if any, is up).
        wait_until(lambda: daemon.runs()[0] >= count, 180, interval=0.25, what=f"the first {kind} runs")
        time.sleep(args.warmup)
        finished0, cpu0 = daemon.runs()[0], tree_cpu(daemon.proc.pid)
        skipped0, load0 = count_events(daemon, "run skipped"), os.getloadavg()[0]
        t0 = time.monotonic()
        time.sleep(args.run_window)
        cpu1, finished1 = tree_cpu(daemon.proc.pid), daemon.runs()[0]
        rss = tree_rss(daemon.proc.pid)
        window = time.monotonic() - t0
        skipped = count_events(daemon, "run skipped") - skipped0
        load1 = os.getloadavg()[0]
        failed = sum(1 for e in daemon.events() if e.get("event") == "run finished" and e.get("status") != "success")
    finally:
        code = daemon.stop()
    runs = finished1 - finished0 - skipped  # skipped slots are recorded as finished rows too
    cpu = cpu1 - cpu0
    slots = count * window / 2.0
    return {
        "kind": kind + (f" (preload {preload})" if preload else ""), "jobs": count,
        "window_s": round(window, 1), "runs": runs, "skipped": skipped,
        "slots": round(slots), "failed_runs": failed, "cpu_s": round(cpu, 3),
        "cpu_ms_per_run": 1000.0 * cpu / runs if runs else math.nan,
        "cores_busy": cpu / window, "loadavg_1m": [round(load0, 2), round(load1, 2)], "exit_code": code,
        "code": str(args.code or ROOT), **rss,
    }


def bench_per_run(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from scheduler.sample.api import start_server

    server, base_url = start_server(records_per_day=args.ingest_records, per_page=args.ingest_records)
    out: dict[str, Any] = {}
    try:
        heavy = "pandas,pyarrow,pyarrow.parquet"
        for kind, count, preload in (("python", args.run_jobs, ""), ("command", args.run_jobs, ""),
                                     ("ingest", args.ingest_jobs, ""), ("ingest", args.ingest_jobs, heavy),
                                     ("python", args.many_jobs, "")):
            if count <= 0 or (preload and args.code):  # the preload switch exists only in this checkout
                continue
            print(f"per-run overhead: {count} {kind} jobs every 2 s{' (preload)' if preload else ''}, "
                  f"{args.run_window:.0f} s window ...", file=sys.stderr)
            key = f"{kind}_{count}" + ("_preload" if preload else "")
            out[key] = bench_run_overhead(root, args, kind, count, base_url, preload)
    finally:
        server.shutdown()
    return out


# --- report ----------------------------------------------------------------------------------------
def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(results: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    rows: list[list[str]] = []
    ok_all = True
    mem = results.get("memory")
    if mem:
        base = mem["baseline"]
        # with --web the pages' modules are loaded before the runs: growth counts from that reading
        reference = mem["web"]["after_first_pages"] if mem.get("web") else mem["start"]
        growth = mem["after"]["rss_mb"] - reference["rss_mb"]
        flat_ok = growth <= args.max_growth_mb
        for label, key in (("after start", "start"), (f"after {mem['runs']} runs, quiet", "after")):
            for unit in ("rss", "uss"):
                value = mem[key][f"{unit}_mb"]
                ok = value <= GOAL_RSS_MB
                ok_all &= ok if unit == "rss" else True
                rows.append([f"Daemon {unit.upper()} {label} (MB)", fmt(value), fmt(base[f"{unit}_mb"]),
                             ratio(value, base[f"{unit}_mb"]), f"<= {GOAL_RSS_MB:.0f}" if unit == "rss" else "-",
                             verdict(ok) if unit == "rss" else "-"])
        if mem.get("web"):
            value = mem["web"]["after_first_pages"]["rss_mb"]
            ok = value <= GOAL_RSS_MB
            ok_all &= ok
            rows.append([f"Daemon RSS after start and {mem['web']['pages_ok']} web pages (MB)", fmt(value),
                         fmt(base["rss_mb"]), ratio(value, base["rss_mb"]), f"<= {GOAL_RSS_MB:.0f}", verdict(ok)])
        rows.append(["Daemon peak RSS during runs (MB)", fmt(mem["peak_rss_mb"]), "-", "-", "-", "-"])
        rows.append([f"RSS growth over {mem['runs']} runs (MB)", f"{growth:+.2f}", "-", "-",
                     f"<= {args.max_growth_mb} (flat)", verdict(flat_ok)])
        ok_all &= flat_ok
    cpu = results.get("idle_cpu")
    if cpu:
        d, b = cpu["daemon"], cpu["baseline"]
        ok = d["cpu_pct"] <= GOAL_IDLE_CPU_PCT
        ok_all &= ok
        rows.append([f"Idle CPU over {cpu['window_s']:.0f} s (%, psutil user+sys)", fmt(d["cpu_pct"], 3),
                     fmt(b["cpu_pct"], 3), "-", f"<= {GOAL_IDLE_CPU_PCT}", verdict(ok)])
        rows.append([f"Idle CPU over {cpu['window_s']:.0f} s (%, schedstat ns)", fmt(d["schedstat_pct"], 4),
                     fmt(b["schedstat_pct"], 4), "-", "-", "-"])
        rows.append(["Idle context switches in the window", str(d["ctx_switches"]), str(b["ctx_switches"]),
                     "-", "-", "-"])
    late = results.get("lateness")
    if late:
        base = late["baseline"]
        for q in ("p50", "p95", "p99", "max"):
            value = late[f"{q}_ms"]
            goal = q == "p99"
            ok = value <= GOAL_P99_MS if goal else True
            ok_all &= ok
            rows.append([f"Fire lateness {q} ({late['n']} fires, {late['jobs']} jobs) (ms)", fmt(value, 2),
                         fmt(base[f"{q}_ms"], 2), ratio(value, base[f"{q}_ms"]),
                         f"<= {GOAL_P99_MS:.0f}" if goal else "-", verdict(ok) if goal else "-"])
        rows.append(["Fires missed in the window", str(late["missed_fires"]), "0", "-", "0",
                     verdict(late["missed_fires"] == 0)])
        ok_all &= late["missed_fires"] == 0
        rows.append(["Daemon CPU during the lateness window (%)", fmt(late["daemon_cpu_pct_during_window"], 1),
                     "-", "-", "-", "-"])
    for item in (results.get("per_run") or {}).values():
        per_run = item["cpu_ms_per_run"]
        goal = item["kind"] == "python" and item["jobs"] == args.run_jobs
        ok = per_run <= GOAL_PY_RUN_CPU_MS if goal else True
        ok_all &= ok
        load = "/".join(f"{v:.1f}" for v in item["loadavg_1m"])
        rows.append([f"CPU per {item['kind']} run, daemon tree ({item['jobs']} jobs every 2 s, {item['runs']} runs, "
                     f"load {load}) (ms)", fmt(per_run, 1), "-", "-",
                     f"<= {GOAL_PY_RUN_CPU_MS:.0f}" if goal else "-", verdict(ok) if goal else "-"])
        rows.append([f"Slots skipped, {item['jobs']} {item['kind']} jobs every 2 s ({item['slots']} slots, "
                     f"{item['window_s']:.0f} s)", str(item["skipped"]), "-", "-", "-", "-"])
        rows.append([f"Cores busy, {item['jobs']} {item['kind']} jobs every 2 s", fmt(item["cores_busy"], 2),
                     "-", "-", "-", "-"])
        if "daemon_rss_mb" in item:
            rows.append([f"RSS after the window, daemon / fork server, {item['jobs']} {item['kind']} jobs (MB)",
                         f"{item['daemon_rss_mb']:.1f} / {item['forkserver_rss_mb']:.1f}", "-", "-", "-", "-"])
    run_job = results.get("run_job")
    if run_job:
        base = run_job["python_c_pass"]
        for label, item in run_job["legs"].items():
            goal = label == "noop_command"
            ok = item["wall_s"] <= GOAL_RUN_JOB_S if goal else True
            ok_all &= ok
            rows.append([f"run-job {label}: wall (first call {item['first_wall_s']:.2f} s) / CPU, median (s, "
                         f"load {item['loadavg_1m']:.1f})", f"{item['wall_s']:.2f} / {item['cpu_s']:.2f}",
                         f"{base['wall_s']:.2f} / {base['cpu_s']:.2f}", ratio(item["wall_s"], base["wall_s"]),
                         f"<= {GOAL_RUN_JOB_S}" if goal else "-", verdict(ok) if goal else "-"])
    header = ["Metric", "Daemon", "Baseline", "Ratio", "Goal", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines), ok_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 200 runs, 10 s CPU window, 15 s lateness window")
    parser.add_argument("--runs", type=int, default=1000, help="short runs before the second memory reading")
    parser.add_argument("--mem-jobs", type=int, default=20, help="jobs firing every second for the memory test")
    parser.add_argument("--max-growth-mb", type=float, default=2.0, help="RSS growth still counted as flat")
    parser.add_argument("--cpu-window", type=float, default=60.0, help="idle CPU window, seconds")
    parser.add_argument("--lateness-jobs", type=int, default=1000)
    parser.add_argument("--lateness-window", type=float, default=60.0, help="seconds of fire times measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the start-up burst")
    parser.add_argument("--tail", type=float, default=3.0, help="seconds to wait after the window for late fires")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to let a daemon settle before reading")
    parser.add_argument("--run-window", type=float, default=40.0, help="per-run overhead window, seconds")
    parser.add_argument("--run-jobs", type=int, default=10, help="trivial jobs per kind (every 2 s)")
    parser.add_argument("--ingest-jobs", type=int, default=4, help="trivial ingest jobs (every 2 s)")
    parser.add_argument("--ingest-records", type=int, default=20, help="records per trivial ingest run")
    parser.add_argument("--many-jobs", type=int, default=100, help="python jobs for the skipped-slot count")
    parser.add_argument("--code", type=Path, default=None,
                        help="run the daemons from this checkout (PYTHONPATH), e.g. for before/after figures")
    parser.add_argument("--run-job-repeats", type=int, default=11, help="run-job calls per job after the first")
    parser.add_argument("--only", choices=["memory", "idle_cpu", "lateness", "per_run", "run_job"], action="append",
                        help="run only these measurements (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "core.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary configs, data and logs")
    parser.add_argument("--web", action="store_true",
                        help="daemons serve http.listen with an API token; memory adds a reading after the first "
                             "web pages, lateness loads them before its window")
    parser.add_argument("--http", action="store_true",
                        help="daemons serve http.listen with an API token, no page is loaded (to tell the "
                             "endpoint's cost from the pages')")
    args = parser.parse_args()
    WEB["on"], WEB["http"] = args.web, args.http
    if args.quick:
        args.runs, args.cpu_window, args.lateness_window = min(args.runs, 200), min(args.cpu_window, 10.0), min(
            args.lateness_window, 15.0)
        args.run_window = min(args.run_window, 10.0)
    parts = args.only or ["memory", "idle_cpu", "lateness", "per_run", "run_job"]
    root = Path(tempfile.mkdtemp(prefix="core-bench-"))
    began = time.monotonic()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "argv": sys.argv[1:], "loadavg_start": os.getloadavg(),
    }
    bare = Bare()
    try:
        if "memory" in parts:
            print(f"memory: {args.runs} runs of {args.mem_jobs} every-second jobs ...", file=sys.stderr)
            results["memory"] = bench_memory(root, bare, args)
        if "idle_cpu" in parts:
            print(f"idle CPU: {args.cpu_window:.0f} s window ...", file=sys.stderr)
            results["idle_cpu"] = bench_idle_cpu(root, bare, args)
        if "run_job" in parts:
            print("run-job of trivial command and python jobs ...", file=sys.stderr)
            results["run_job"] = bench_run_job(root, args)
        if "per_run" in parts:
            results["per_run"] = bench_per_run(root, args)
        if "lateness" in parts:
            print(f"lateness: {args.lateness_jobs} jobs, {args.lateness_window:.0f} s window, then the "
                  "minimal scheduler ...", file=sys.stderr)
            results["lateness"] = bench_lateness(root, args)
    finally:
        bare.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - began, 1)
    results["loadavg_end"] = os.getloadavg()
    table, ok = report(results, args)
    results["goals_met"] = ok
    print(table)
    busiest = max(results["loadavg_start"][0], results["loadavg_end"][0])
    if busiest > (os.cpu_count() or 1) * 0.5:
        print(f"\nnote: the host was busy (1-min load average up to {busiest:.1f} on {os.cpu_count()} CPUs); "
              "lateness and CPU figures include that contention, as does the baseline")
    print(f"\n{'all goals met' if ok else 'goal missed'}; {results['duration_s']:.0f} s; details in {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
