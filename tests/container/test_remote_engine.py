"""An engine reached over TCP through DOCKER_HOST: a second dockerd on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors
import pytest
from container_helpers import RecordingLog, container_job, ensure_test_image, make_ctx, no_engine

from scheduler.kinds.container import cleanup_orphans, execute
from scheduler.kinds.container.engine import EngineUnavailable, make_client, resolve_host
from scheduler.kinds.container.settings import DockerSettings, DockerTLS

pytestmark = [pytest.mark.docker, pytest.mark.slow]


# dockerd takes its listener through systemd socket activation (``-H fd://``): descriptors from 3
# on, LISTEN_FDS of them, for the process whose pid is LISTEN_PID.  This trampoline moves the
# inherited socket to 3 and execs dockerd, which keeps its pid.
ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


@contextmanager
def second_dockerd(extra: list[str], reach: Callable[[str], DockerSettings]) -> Iterator[str]:
    """A dockerd of our own on 127.0.0.1, with its own state and bridge, stopped afterwards.

    Yields its ``tcp://`` address.  The port is race-free: the test binds port 0, reads the port
    back and hands the listening socket to dockerd, so no other process can take it in between.
    """
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        no_engine("a second dockerd needs the dockerd binary and root")
    if shutil.which("ip") is None:
        no_engine("the 'ip' tool (iproute2) is needed to give the second dockerd a bridge")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    host = f"tcp://127.0.0.1:{port}"
    # Short paths: containerd's socket lives under the exec root and must fit in sun_path.
    root = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    # Its own bridge: with --bridge=none dockerd deletes docker0, breaking the first engine's
    # default network; a non-default bridge name must exist before dockerd starts.  Named after
    # the port, which is ours while the listener lives.
    bridge = f"sdbr{port}"[:15]
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    log_file = (root / "dockerd.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", ACTIVATE, str(listener.fileno()),
         dockerd, "--host", "fd://", "--data-root", str(root / "data"), "--exec-root", str(root / "x"),
         "--pidfile", str(root / "dockerd.pid"), "--bridge", bridge, "--iptables=false", "--ip-masq=false", *extra],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(listener.fileno(),),
    )  # fmt: skip
    listener.close()  # dockerd holds its own copy
    try:
        client: docker.DockerClient | None = None
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = make_client(reach(host))
                client.ping()
            except (docker.errors.DockerException, EngineUnavailable):
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


@pytest.fixture(scope="module")
def tcp_engine() -> Iterator[str]:
    with second_dockerd([], lambda host: DockerSettings(host=host)) as host:
        yield host


def make_certs(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, named as DOCKER_CERT_PATH expects."""
    if shutil.which("openssl") is None:
        no_engine("openssl is needed to make TLS certificates")

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca-key.pem", "-out", "ca.pem")  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):  # fmt: skip
        prefix = "" if name == "client" else "server-"
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{prefix}key.pem",
            "-out", f"{name}.csr")  # fmt: skip
        (directory / f"{name}.ext").write_text(ext)
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{prefix}cert.pem")  # fmt: skip


@pytest.fixture(scope="module")
def tls_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    make_certs(certs)
    tls = DockerTLS(ca_cert=str(certs / "ca.pem"), client_cert=str(certs / "cert.pem"),
                    client_key=str(certs / "key.pem"))
    extra = ["--tlsverify", "--tlscacert", str(certs / "ca.pem"), "--tlscert", str(certs / "server-cert.pem"),
             "--tlskey", str(certs / "server-key.pem")]  # fmt: skip
    with second_dockerd(extra, lambda host: DockerSettings(host=host, tls=tls)) as host:
        yield host, certs


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


def test_tls_engine_through_docker_env(tls_engine: tuple[str, Path], settings: DockerSettings, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    host, certs = tls_engine
    monkeypatch.setenv("DOCKER_HOST", host)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    log = RecordingLog()
    execute(container_job(command=["echo", "over tls"]), make_ctx(tmp_path, log=log, docker=settings))
    assert log.lines() == ["over tls"]


def test_tls_engine_through_settings(tls_engine: tuple[str, Path], settings: DockerSettings, tmp_path: Path) -> None:
    host, certs = tls_engine
    tls = {"ca_cert": str(certs / "ca.pem"), "client_cert": str(certs / "cert.pem"),
           "client_key": str(certs / "key.pem")}
    log = RecordingLog()
    configured = settings.model_copy(update={"host": host, "tls": DockerTLS(**tls)})
    execute(container_job(command=["echo", "over tls"]), make_ctx(tmp_path, log=log, docker=configured))
    assert log.lines() == ["over tls"]
    without_client_cert = settings.model_copy(update={"host": host, "tls": DockerTLS(ca_cert=tls["ca_cert"])})
    with pytest.raises(Exception, match="cannot reach the Docker engine|certificate|handshake|SSL"):
        execute(container_job(command=["true"]), make_ctx(tmp_path, docker=without_client_cert))
