"""The example pipeline of config/jobs.yaml in the real image, run the way a server runs it.

One named data volume; the sample sales API on the host's 127.0.0.1 (the scheduler containers use
``--network host``); the Docker socket mounted, reached through its group (``--group-add``); the
config baked into the image, unchanged, configured by environment only: ``SALES_API_URL``,
``TRAIN_MODEL_IMAGE`` (the image under test) and ``SCHEDULER_DATA_VOLUME`` (the named volume, so
train_model's sibling container mounts the same data the scheduler writes).

1. ``run-job daily_sales --date D`` fills the 20 days before the newest slot's logical date, as an
   operator fills history on a new server.
2. The daemon (``scheduler run``) is started.  Its state says it last fired the slot before the
   newest one, as after a night of downtime, so with ``catchup: latest`` it runs daily_sales for
   the newest slot at once; that success triggers train_model through ``after: daily_sales``, in a
   sibling container started over the socket.  (``run-job`` never triggers ``after:``: only the
   daemon chains jobs, so the daemon is what runs here.)
3. The records on the volume, the daemon's log, the model files and the engine are checked.
"""

from __future__ import annotations

import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from image_helpers import HARDENED, REPO, Containers, docker, inspect, json_lines
from polling import wait_for

from scheduler import clock
from scheduler.config import load_config
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_JOB
from scheduler.sample.api import start_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SOCKET = "/var/run/docker.sock"
HISTORY_DAYS = 20  # with the daemon's day, 21: train_model's 14 training days plus its 7-day holdout
RECORDS_PER_DAY = 200
GPU_FALLBACK = "no GPU available; running without GPU (gpu_policy: preferred)"
SEED_LAST_FIRED = """
import sys
from datetime import datetime
from pathlib import Path
from scheduler.state import StateStore
store = StateStore.open(Path('/data/.scheduler/state.db'))
store.set_last_fired('daily_sales', datetime.fromisoformat(sys.argv[1]))
store.close()
"""


def newest_slot() -> tuple[date, Any]:
    """The newest slot of daily_sales as config/jobs.yaml schedules it, and its logical date."""
    schedule = load_config(REPO / "config").schedules["daily_sales"]
    slot = schedule.prev_at_or_before(clock.now())
    assert slot is not None
    return schedule.logical_date(slot), schedule


def events(lines: list[str], name: str, job: str | None = None) -> list[dict[str, Any]]:
    return [e for e in json_lines(lines) if e.get("event") == name and (job is None or e.get("job") == job)]


def test_daily_sales_then_train_model_after_it_in_the_daemon(containers: Containers, tmp_path: Path) -> None:
    if not (os.path.exists(SOCKET) and stat.S_ISSOCK(os.stat(SOCKET).st_mode)):
        pytest.skip(f"{SOCKET} is not a socket on this host")
    started = time.monotonic()
    last_day, schedule = newest_slot()
    history_days = [last_day - timedelta(days=k) for k in range(HISTORY_DAYS, 0, -1)]
    volume = containers.volume()
    server, url = start_server(port=0, records_per_day=RECORDS_PER_DAY)  # on the host's 127.0.0.1
    options = [*HARDENED, "--network", "host", "-v", f"{volume}:/data",
               "-v", f"{SOCKET}:{SOCKET}", "--group-add", str(os.stat(SOCKET).st_gid),
               "-e", f"SALES_API_URL={url}", "-e", f"TRAIN_MODEL_IMAGE={containers.image}",
               "-e", f"SCHEDULER_DATA_VOLUME={volume}"]
    timings: dict[str, float] = {}
    try:
        # 1. History, a few days at a time (runs beside each other share the state store safely).
        first = containers.run("run-job", "daily_sales", "--date", history_days[0].isoformat(),
                               options=options, timeout=180)  # alone: it initialises the volume
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        with ThreadPoolExecutor(max_workers=4) as pool:
            runs = list(pool.map(lambda d: (d, containers.run("run-job", "daily_sales", "--date", d.isoformat(),
                                                              options=options, timeout=180)), history_days[1:]))
        for day, proc in runs:
            assert proc.returncode == 0, f"{day}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        timings["history"] = time.monotonic() - started

        # 2. The daemon, last fired one slot before the newest (what it would have recorded itself
        #    had it run the day before); catch-up runs the newest slot, after: chains train_model.
        seeded = containers.run("-c", SEED_LAST_FIRED, schedule.slot_for_date(history_days[-1]).isoformat(),
                                options=["--entrypoint", "python", "-v", f"{volume}:/data"])
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        daemon_started = time.monotonic()
        cid = containers.start(options=options)
        finished = wait_for(lambda: events(containers.logs(cid), "run finished", "train_model")
                            or _dead(cid), 180, "train_model to finish in the daemon", interval=0.25)
        assert isinstance(finished, list), "the daemon exited:\n" + "\n".join(containers.logs(cid)[-40:])
        timings["daemon"] = time.monotonic() - daemon_started
        docker("stop", "--time", "30", cid, timeout=60)
        assert inspect("container", cid)["State"]["ExitCode"] == 0
    finally:
        server.shutdown()
    lines = containers.logs(cid)

    # The daemon ran daily_sales for the newest slot, then train_model because of it.
    [sales_done] = events(lines, "run finished", "daily_sales")
    assert sales_done["status"] == "success", sales_done
    [triggered] = events(lines, "triggering downstream job", "train_model")
    assert triggered["upstream"] == "daily_sales" and triggered["logical_date"] == last_day.isoformat(), triggered
    [train_done] = finished
    assert train_done["status"] == "success" and train_done["exit_code"] == 0, train_done
    # No GPU runtime on this engine: gpus: all with gpu_policy: preferred falls back to the CPU.
    [fallback] = events(lines, GPU_FALLBACK, "train_model")
    assert fallback["level"] == "warning" and fallback["reason"], fallback
    assert any(e.get("event") == "container started" and e.get("gpus") is False for e in json_lines(lines))
    # The sibling's own output, relayed into the daemon's log: it read every partition on the volume.
    said = [e["line"] for e in json_lines(lines) if e.get("job") == "train_model" and e.get("event") == "output"]
    assert any(s.startswith(f"training on {HISTORY_DAYS + 1} days ({history_days[0]}..{last_day})") for s in said), said

    # The records in the state store on the volume, as the image's own `history` reads them.
    proc = containers.run("history", "--json", "--limit", "1000", options=["-v", f"{volume}:/data"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads(proc.stdout)
    sales = {r["logical_date"]: r for r in records if r["job"] == "daily_sales"}
    assert sorted(sales) == [d.isoformat() for d in [*history_days, last_day]]
    assert all(r["status"] == "success" for r in sales.values()), [
        r for r in sales.values() if r["status"] != "success"]
    assert [r["trigger"] for r in sales.values()].count("manual") == HISTORY_DAYS
    assert sales[last_day.isoformat()]["trigger"] in ("catchup", "schedule")
    [train] = [r for r in records if r["job"] == "train_model"]
    assert (train["status"], train["exit_code"], train["trigger"]) == ("success", 0, "after"), train
    assert train["logical_date"] == last_day.isoformat()
    metrics = train["metrics"]
    assert metrics["exit_code"] == 0 and metrics["image"] == containers.image, metrics
    assert metrics["gpu_fallback"] is True and "without GPU" in metrics["warning"], metrics

    # The model, published on the volume by the sibling; copied out through a container never started.
    holder = docker("create", "--label", "org.cron-scheduler.image-test=1", "-v", f"{volume}:/data",
                    containers.image).stdout.strip()
    containers.ids.append(holder)
    docker("cp", f"{holder}:/data/models", str(tmp_path))
    out = tmp_path / "models" / last_day.isoformat()
    model = json.loads((out / "model.json").read_text())
    published = json.loads((out / "metrics.json").read_text())
    assert model["as_of"] == published["as_of"] == last_day.isoformat()
    assert model["days"] == [history_days[0].isoformat(), last_day.isoformat()]
    assert model["partitions"] == HISTORY_DAYS + 1
    assert model["backend"].startswith("numpy")  # the CPU fallback
    assert model["stores"] and all(len(s["forecast"]) == 7 for s in model["stores"].values())
    assert published["overall"]["holdout_days"] == 7 and "model" in published["overall"], published["overall"]
    assert published["rows"] > 0 and published["rows_without_store"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.json"]  # no temp files left

    # Nothing of ours is left on the engine: the sibling was removed by the scheduler, the rest by us.
    assert inspect("container", metrics["container_id"]) is None
    siblings = docker("ps", "-aq", "--filter", f"label={LABEL_JOB}=train_model",
                      "--filter", f"label={LABEL_INSTANCE}=default").stdout.split()
    assert not siblings, f"train_model containers left behind: {siblings}"
    ours = list(containers.ids)
    containers.cleanup()
    assert [c for c in ours if inspect("container", c) is not None] == []
    print(f"history {timings['history']:.1f}s, daemon to train_model done {timings['daemon']:.1f}s, "
          f"total {time.monotonic() - started:.1f}s")


def _dead(cid: str) -> bool:
    """True once the container has stopped (so a crashed daemon fails the wait at once)."""
    info = inspect("container", cid)
    return info is None or not info["State"]["Running"]
