"""An engine reached over TCP through DOCKER_HOST: a second dockerd on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from container_helpers import RecordingLog, container_job, ensure_test_image, make_ctx, no_engine

from scheduler.kinds.container import cleanup_orphans, execute
from scheduler.kinds.container.engine import resolve_host
from scheduler.kinds.container.spec import DockerSettings

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tcp_engine() -> Iterator[str]:
    """A dockerd of our own on tcp://127.0.0.1:PORT, with its own state, stopped afterwards."""
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        no_engine("a second dockerd needs the dockerd binary and root")
    # Short paths: containerd's socket lives under the exec root and must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    host = f"tcp://127.0.0.1:{free_port()}"
    log_file = (root / "dockerd.log").open("w")
    # Its own bridge: with --bridge=none dockerd deletes docker0, breaking the first engine's
    # default network; a non-default bridge name must exist before dockerd starts.
    bridge = f"sdbr{os.getpid() % 10000}"
    if shutil.which("ip") is None:
        no_engine("the 'ip' tool (iproute2) is needed to give the second dockerd a bridge")
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    proc = subprocess.Popen(
        [dockerd, "--host", host, "--data-root", str(root / "data"), "--exec-root", str(root / "x"),
         "--pidfile", str(root / "dockerd.pid"), "--bridge", bridge, "--iptables=false", "--ip-masq=false"],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        client: docker.DockerClient | None = None
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = docker.DockerClient(base_url=host, version="auto", timeout=10)
                client.ping()
            except docker.errors.DockerException:
                client = None
                if proc.poll() is not None or time.monotonic() > deadline:
                    no_engine(f"second dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
                time.sleep(0.3)
        ensure_test_image(client)
        client.close()
        yield host
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log_file.close()
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_docker_host_reaches_a_tcp_engine(tcp_engine: str, docker_client, settings: DockerSettings, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("DOCKER_HOST", tcp_engine)
    assert settings.host is None and resolve_host(settings) == tcp_engine
    log = RecordingLog()
    result = execute(container_job(command=["sh", "-c", "echo on the remote engine; exit 0"]),
                     make_ctx(tmp_path, log=log, docker=settings))  # fmt: skip
    assert result["exit_code"] == 0
    assert log.lines() == ["on the remote engine"]
    remote = docker.DockerClient(base_url=tcp_engine, version="auto")
    try:
        with pytest.raises(docker.errors.NotFound):  # removed there too
            remote.api.inspect_container(result["container_id"])
    finally:
        remote.close()
    with pytest.raises(docker.errors.NotFound):  # it never ran on the local engine
        docker_client.api.inspect_container(result["container_id"])


def test_explicit_host_setting_wins_over_docker_host(tcp_engine: str, settings: DockerSettings, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    remote_settings = settings.model_copy(update={"host": tcp_engine})
    spec = container_job(command=["sleep", "600"], timeout="1s", kill_grace="2s")
    with pytest.raises(Exception, match="timed out"):
        execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=remote_settings))
    assert cleanup_orphans(remote_settings) == []
