"""Jobs from the real image: the daily sales ingest to Parquet, sibling container jobs (socket, API proxy)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from image_helpers import HARDENED, REPO, Containers, docker, history, no_engine, with_config
from polling import wait_for

from scheduler.sample.api import start_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

SOCKET = "/var/run/docker.sock"
CLEAN_COLUMNS = ["order_id", "sold_at", "store_id", "sku", "quantity", "unit_price", "currency",
                 "customer_email", "customer_segment", "revenue"]


def test_run_job_daily_sales_writes_parquet_the_host_reads(containers: Containers, tmp_path: Path) -> None:
    server, url = start_server(port=0, records_per_day=2_000)  # on the host's 127.0.0.1
    try:
        volume = containers.volume()
        # --network host: the API listens on the host's loopback only.
        proc = containers.run("run-job", "daily_sales", "--date", "2026-11-05", timeout=180,
                              options=[*HARDENED, "--network", "host", "-v", f"{volume}:/data",
                                       "-e", f"SALES_API_URL={url}"])
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Copy the partition out of the named volume (works with any engine, local or not).
    holder = docker("create", "-v", f"{volume}:/data", containers.image).stdout.strip()
    containers.ids.append(holder)
    out = tmp_path / "out"
    out.mkdir()
    docker("cp", f"{holder}:/data/sales", str(out))
    parts = sorted((out / "sales" / "date=2026-11-05").glob("part-*.parquet"))
    assert parts, list(out.rglob("*"))
    table = pq.read_table(parts[0])
    assert table.column_names == CLEAN_COLUMNS
    assert 1_800 < table.num_rows <= 2_000
    assert len(set(table.column("order_id").to_pylist())) == table.num_rows


@pytest.mark.parametrize("hardened", [False, True], ids=["plain", "read-only-cap-drop-all"])
def test_sibling_container_job_records_its_exit_code(containers: Containers, config_dir, hardened: bool) -> None:
    if not (os.path.exists(SOCKET) and stat.S_ISSOCK(os.stat(SOCKET).st_mode)):
        no_engine(f"{SOCKET} is not a socket on this host")
    instance = f"image-test-{uuid.uuid4().hex[:8]}"
    config = config_dir(f"""
        docker:
          instance: {instance}
        jobs:
          sibling:
            kind: container
            image: scheduler-test-busybox:latest
            pull: never
            command: ["sh", "-c", "echo hello from the sibling; exit 7"]
    """)
    volume = containers.volume()
    # The unprivileged user reaches the engine through the socket's group, nothing more.
    options = [*(HARDENED if hardened else ()), *with_config(config, volume),
               "-v", f"{SOCKET}:{SOCKET}", "--group-add", str(os.stat(SOCKET).st_gid)]
    proc = containers.run("run-job", "sibling", options=options, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the job failed, as its container did
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "output" and e.get("line") == "hello from the sibling" for e in events), proc.stdout

    [record] = history(containers, config, volume, "sibling")
    assert record["status"] == "failed"
    assert "exited with code 7" in (record["error"] or ""), record
    assert record["exit_code"] == 7, record
    left = docker("ps", "-aq", "--filter", f"label=org.cron-scheduler.instance={instance}").stdout.split()
    assert not left, f"sibling containers left behind: {left}"


@pytest.fixture
def api_proxy(tmp_path: Path) -> Iterator[str]:
    """The Docker API proxy of docker-compose.yml (its HAProxy config file as is), on 127.0.0.1.

    The listening socket is ours: bound to port 0, its port read back, and handed to HAProxy as an
    inherited descriptor (``bind fd@N``), so no other process can take the port in between.
    """
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["docker-proxy"]["volumes"]
    [mount] = [m for m in mounts if m.split(":")[1] == "/usr/local/etc/haproxy/haproxy.cfg"]
    text = (REPO / mount.split(":")[0]).read_text()
    assert "bind :2375" in text
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text.replace("bind :2375", f"bind fd@{listener.fileno()}"))
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], pass_fds=(listener.fileno(),),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    listener.close()  # HAProxy holds its own copy
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(url, "GET", "/_ping") == 200 or proc.poll() is not None, 10, "the proxy to answer",
                 interval=0.25)
        assert proc.poll() is None, f"haproxy exited with {proc.returncode}"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _status(url: str, method: str, path: str) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, method=method), timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_container_job_through_the_compose_api_proxy(containers: Containers, config_dir, api_proxy: str) -> None:
    instance = f"image-test-{uuid.uuid4().hex[:8]}"
    config = config_dir(f"""
        docker:
          instance: {instance}
        jobs:
          sibling:
            kind: container
            image: scheduler-test-busybox:latest
            pull: missing
            command: ["sh", "-c", "echo hello through the proxy; exit 7"]
    """)
    volume = containers.volume()
    options = [*HARDENED, *with_config(config, volume), "--network", "host", "-e", f"DOCKER_HOST=tcp{api_proxy[4:]}"]
    proc = containers.run("run-job", "sibling", options=options, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [record] = history(containers, config, volume, "sibling")
    assert "exited with code 7" in (record["error"] or ""), record
    assert record["exit_code"] == 7, record
    assert not docker("ps", "-aq", "--filter", f"label=org.cron-scheduler.instance={instance}").stdout.split()
    # Everything container jobs do not need is refused.
    for method, path in [("GET", "/info"), ("GET", "/v1.41/images/json"), ("POST", "/v1.41/containers/x/exec"),
                         ("POST", "/v1.41/containers/x/kill"), ("POST", "/build"), ("GET", "/volumes"),
                         ("POST", "/v1.41/containers/x/update"), ("PUT", "/v1.41/containers/x/archive")]:
        assert _status(api_proxy, method, path) == 403, (method, path)
