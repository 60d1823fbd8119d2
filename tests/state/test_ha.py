"""Several ``scheduler run`` replicas on one PostgreSQL database, as real processes.

Each job appends ``start JOB SLOT run=ID pid=PID t=EPOCH`` to a file when it starts (and some an
``end`` line when they end); the tests count those lines per ``(job, slot)`` and compare them
with the store.  Replicas are SIGKILLed and restarted, and the PostgreSQL server is stopped and
started, while they run.  Every wait polls with a deadline; nothing asserts a duration.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pgcluster
import pytest
from polling import wait_for
from replicas import Replica, counts, end_group_leaders, out_lines, write_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def line(out: Path, extra: str = "") -> str:
    """Shell that appends this run's start line to ``out``."""
    return (f'echo "start $SCHEDULER_JOB $SCHEDULER_SLOT run=$SCHEDULER_RUN_ID pid=$$$$ t=$(date +%s.%N){extra}" '
            f">> {out}")


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[pgcluster.Cluster]:
    """A cluster of this module's own: its tests stop and restart the server."""
    with pgcluster.running() as cluster:
        yield cluster


@pytest.fixture
def ha(ha_cluster: pgcluster.Cluster, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh database, the output file, and the replicas a test starts (stopped at teardown)."""
    try:  # a test that failed while the server was stopped leaves it stopped
        ha_cluster.start_server()
    except RuntimeError:
        pass
    name = ha_cluster.create_database()
    out = tmp_path / "out.txt"
    started: list[Replica] = []
    yield {"url": ha_cluster.url(name), "out": out, "replicas": started, "root": tmp_path}
    for replica in started:
        replica.stop()
    end_group_leaders(out)
    ha_cluster.drop_database(name)


def replicas(ha: dict[str, Any], config: Path, count: int) -> list[Replica]:
    made = [Replica(chr(ord("a") + i), config, ha["root"], ha["url"]) for i in range(count)]
    ha["replicas"].extend(made)
    for replica in made:
        replica.start()
    return made


def rows(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row, options="-c TimeZone=UTC") as conn:
        return list(conn.execute(query, args).fetchall())


def abandoned_slots(group: list[Replica]) -> set[tuple[str, str]]:
    """``(job, slot)`` of every run a replica recorded abandoned (cut short by a replica's death)."""
    return {(e["job"], datetime.fromisoformat(e["slot"]).isoformat())
            for r in group for e in r.events() if e.get("event") == "run abandoned"}


# --- the whole story ---------------------------------------------------------------------------
def test_three_replicas_fire_every_slot_once_through_a_sigkill_and_a_database_restart(
        ha: dict[str, Any], ha_cluster: pgcluster.Cluster) -> None:
    out: Path = ha["out"]
    config = write_config(ha["root"] / "jobs.yaml", f"""\
        every1:
          kind: command
          every: 1s
          catchup: all
          concurrency: allow
          shell: '{line(out)}'
        every2:
          kind: command
          every: 2s
          catchup: all
          concurrency: allow
          shell: '{line(out)}; sleep 0.5'
        other1:
          kind: command
          every: 1s
          catchup: all
          concurrency: allow
          shell: '{line(out)}'
        after2:
          kind: command
          after: every2
          concurrency: allow
          shell: '{line(out)}'
        """)
    a, b, c = replicas(ha, config, 3)
    began = time.time()
    wait_for(lambda: len(counts(out)) >= 30, 60, what="30 runs")

    b.kill()  # SIGKILL: no goodbye, runs left running
    wait_for(lambda: len(counts(out)) >= 60, 60, what="runs while a replica is dead")
    b.start()

    wait_for(lambda: len(counts(out)) >= 90, 60, what="runs after the restart")
    ha_cluster.stop_server()
    wait_for(lambda: a.healthz()[0] == 503, 30, what="503 while the database is down")
    ha_cluster.start_server()
    wait_for(lambda: all(r.healthz()[0] == 200 for r in (a, b, c)), 60, what="healthy again")
    wait_for(lambda: time.time() - began > 65, 120, interval=0.5, what="a minute of running")
    ended = time.time()
    for replica in (a, b, c):
        assert replica.stop() == 0

    seen = counts(out)
    cut_short = abandoned_slots([a, b, c])
    # every slot of the scheduled jobs between the first and the last second, exactly once
    for job, every in (("every1", 1), ("other1", 1), ("every2", 2)):
        slots = sorted(datetime.fromisoformat(slot) for (j, slot) in seen if j == job)
        window = [s for s in slots if began + 3 < s.timestamp() < ended - 3]
        first, last = window[0].timestamp(), window[-1].timestamp()
        expected = {datetime.fromtimestamp(t, slots[0].tzinfo).isoformat()
                    for t in range(int(first), int(last) + 1, every)}
        missing = sorted(s for s in expected if (job, s) not in seen)
        assert not missing, f"{job}: slots never run: {missing}"
    doubled = {key: n for key, n in seen.items() if n > 1 and key not in cut_short}
    assert not doubled, f"slots run more than once: {doubled}"
    assert all(n <= 2 for n in seen.values())  # a run cut short by its replica's death: once more
    # after: chains fire once per upstream success (the store has one row per slot, all success)
    assert all(n == 1 for (job, _), n in seen.items() if job == "after2")
    # (the final SIGTERM interrupts the runs in flight at the very end)
    records = rows(ha["url"], "SELECT job, slot, status FROM runs WHERE status <> 'success' AND slot < %s",
                   datetime.fromtimestamp(ended - 2).astimezone())
    assert records == [], records


# --- focused cases ----------------------------------------------------------------------------
def test_a_replica_killed_while_running_a_job_has_it_abandoned_and_rerun_once_by_a_survivor(
        ha: dict[str, Any]) -> None:
    out: Path = ha["out"]
    config = write_config(ha["root"] / "jobs.yaml", f"""\
        long:
          kind: command
          every: 1d
          catchup: latest
          shell: '{line(out)}; sleep 120'
        """, lease_ttl="3s")
    a, b = replicas(ha, config, 2)
    accepted = a.request_run("long")
    [started] = wait_for(lambda: out_lines(out), 30, what="the run on a")
    run_id = int(started[3].removeprefix("run="))
    [row] = rows(ha["url"], "SELECT status, owner FROM runs WHERE id = %s", run_id)
    assert row["status"] == "running" and row["owner"].split(":")[1] == str(a.pid)

    a.kill()
    [_, rerun] = wait_for(lambda: (lines := out_lines(out))[1:] and lines, 60, what="the slot run again")
    abandoned = wait_for(lambda: [e for e in b.events() if e.get("event") == "run abandoned"], 10)
    assert abandoned[0]["run_id"] == run_id and "lease of" in abandoned[0]["reason"]
    assert rerun[2] == started[2] == datetime.fromisoformat(accepted["slot"]).isoformat()
    assert rerun[4] != started[4]  # another process: b's
    [row] = rows(ha["url"], "SELECT status, owner, trigger FROM runs WHERE job = 'long'")
    assert row["status"] == "running" and row["owner"].split(":")[1] == str(b.pid) and row["trigger"] == "catchup"
    # a third replica starting now finds the slot held by b: nothing runs a third time
    c = Replica("c", config, ha["root"], ha["url"])
    ha["replicas"].append(c)
    c.start()
    wait_for(lambda: c.healthz()[0] == 200 and any(e.get("event") == "scheduler started" for e in c.events()), 30)
    assert len(out_lines(out)) == 2


def test_forbid_holds_across_replicas(ha: dict[str, Any]) -> None:
    out: Path = ha["out"]
    config = write_config(ha["root"] / "jobs.yaml", f"""\
        single:
          kind: command
          every: 1s
          concurrency: forbid
          shell: '{line(out)}; sleep 2.5; echo "end $SCHEDULER_JOB $SCHEDULER_SLOT t=$(date +%s.%N)" >> {out}'
        """)
    group = replicas(ha, config, 2)
    wait_for(lambda: len(counts(out, "end")) >= 3, 60, what="three runs ended")
    for replica in group:
        replica.stop()
    starts = {f[2]: float(f[5][2:]) for f in out_lines(out) if f[0] == "start"}
    ends = {f[2]: float(f[3][2:]) for f in out_lines(out) if f[0] == "end"}
    spans = sorted((starts[s], ends.get(s, float("inf"))) for s in starts)
    for (_, end), (start, _) in pairwise(spans):
        assert start >= end, f"runs overlapped: {spans}"
    skipped = rows(ha["url"], "SELECT slot FROM runs WHERE job = 'single' AND status = 'skipped'")
    assert skipped, "slots during a run were not recorded skipped"
    ran = {datetime.fromisoformat(s) for s in starts}
    assert not ran & {r["slot"] for r in skipped}  # a slot is run or skipped, never both
    assert max(counts(out).values()) == 1


def test_database_outage_pauses_claims_keeps_records_and_resumes(
        ha: dict[str, Any], ha_cluster: pgcluster.Cluster) -> None:
    out: Path = ha["out"]
    config = write_config(ha["root"] / "jobs.yaml", f"""\
        ticks:
          kind: command
          every: 1s
          catchup: all
          concurrency: allow
          shell: '{line(out)}'
        slow:
          kind: command
          every: 1d
          shell: '{line(out)}; sleep 3'
        """, lease_ttl="30s")
    [a] = replicas(ha, config, 1)
    wait_for(lambda: len(counts(out)) >= 3, 30, what="ticks")
    a.request_run("slow")
    [slow] = wait_for(lambda: [f for f in out_lines(out) if f[1] == "slow"], 30, what="the slow run")
    ha_cluster.stop_server()
    stopped = time.time()
    status, body = wait_for(lambda: (h := a.healthz())[0] == 503 and h, 30, what="503")
    assert any("state store" in reason for reason in body["reasons"]), body
    slow_id = int(slow[3].removeprefix("run="))
    wait_for(lambda: [e for e in a.events() if e.get("event") == "run finished" and e.get("run_id") == slow_id],
             30, what="the slow run to finish during the outage")
    ha_cluster.start_server()
    restarted = time.time()
    wait_for(lambda: a.healthz()[0] == 200, 60, what="healthy again")
    [row] = wait_for(lambda: rows(ha["url"], "SELECT status, ended_at FROM runs WHERE id = %s AND status <> "
                                  "'running'", slow_id), 30, what="the slow run's record")
    assert row["status"] == "success" and row["ended_at"].timestamp() < restarted  # when it ended, written later
    # the outage's slots run after it (catchup: all), none before the database answered
    outage = range(int(stopped) + 1, int(restarted))
    wait_for(lambda: all(any(datetime.fromisoformat(slot).timestamp() == t for (job, slot) in counts(out)
                             if job == "ticks") for t in outage), 30, what="the outage's slots caught up")
    assert not [f for f in out_lines(out) if stopped + 1 < float(f[5][2:]) < restarted]  # none fired blind
    wait_for(lambda: any(float(f[5][2:]) > restarted + 2 for f in out_lines(out)), 30, what="firing resumed")
    assert a.stop() == 0
    assert max(counts(out).values()) == 1


def test_run_job_is_refused_while_a_replica_runs_the_slot_and_force_waits_for_it(ha: dict[str, Any]) -> None:
    out: Path = ha["out"]
    config = write_config(ha["root"] / "jobs.yaml", f"""\
        daily:
          kind: command
          schedule: "0 3 * * *"
          shell: '{line(out)}; sleep 12; echo "end $SCHEDULER_JOB $SCHEDULER_SLOT t=$(date +%s.%N)" >> {out}'
        """, lease_ttl="30s")
    [a] = replicas(ha, config, 1)
    a.request_run("daily")
    [started] = wait_for(lambda: out_lines(out), 30, what="the replica's run")
    [row] = rows(ha["url"], "SELECT id, logical_date FROM runs WHERE job = 'daily'")
    argv = [sys.executable, "-m", "scheduler", "run-job", "daily", "--date", row["logical_date"].isoformat(),
            "--config", str(ha["root"] / "jobs.yaml"), "--data-dir", str(ha["root"] / "cli")]
    refused = subprocess.run(argv, env=a.env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr
    assert f"refused: run {row['id']} of daily for slot {started[2]} is running" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    forced = subprocess.run([*argv, "--force"], env=a.env, capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert "waiting for it to end (--force)" in forced.stderr
    runs = out_lines(out)
    assert [f[0] for f in runs] == ["start", "end", "start", "end"]  # one after the other, never both
    assert {f[2] for f in runs} == {started[2]}
