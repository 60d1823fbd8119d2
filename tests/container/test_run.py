"""The container lifecycle against a real engine: exit codes, live output, timeout, OOM, posture."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from container_helpers import RecordingLog, container_job, make_ctx, ours

from scheduler.errors import ConfigError, JobFailed
from scheduler.kinds.container import execute
from scheduler.kinds.container.run import ContainerFailed, ContainerTimedOut, ImageUnavailable
from scheduler.kinds.container.settings import DockerSettings

pytestmark = pytest.mark.docker


def gone(client: Any, cid: str) -> bool:
    try:
        client.api.inspect_container(cid)
    except docker.errors.NotFound:
        return True
    return False


def test_exit_zero_returns_the_result_and_removes_the_container(docker_client, settings, tmp_path: Path) -> None:
    log = RecordingLog()
    result = execute(container_job(command=["sh", "-c", "echo hello"]), make_ctx(tmp_path, log=log, docker=settings))
    assert result["exit_code"] == 0 and result["oom_killed"] is False and result["gpu_fallback"] is False
    assert log.output() == [("stdout", "hello")]
    assert gone(docker_client, result["container_id"])


@pytest.mark.parametrize("code", [1, 3, 42])
def test_non_zero_exit_fails_the_run_with_the_code(docker_client, settings, tmp_path: Path, code: int) -> None:
    spec = container_job(command=["sh", "-c", f"echo failing >&2; exit {code}"])
    with pytest.raises(ContainerFailed, match=f"^container exited with code {code}$") as info:
        execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=settings))
    assert info.value.container_exit_code == code
    assert isinstance(info.value, JobFailed) and info.value.exit_code == 1
    assert ours(docker_client, settings) == []


def test_output_is_streamed_live_and_in_order(settings, tmp_path: Path) -> None:
    log = RecordingLog()
    script = "echo one; sleep 1; echo two >&2; sleep 1; printf 'thr'; sleep 0.2; echo ee; printf 'no newline'"
    started = time.monotonic()
    execute(container_job(command=["sh", "-c", script]), make_ctx(tmp_path, log=log, docker=settings))
    ended = time.monotonic()
    assert log.output() == [("stdout", "one"), ("stderr", "two"), ("stdout", "three"), ("stdout", "no newline")]
    arrival = {kw["stream"] + ":" + kw["line"]: t for t, _, event, kw in log.records if event == "output"}
    # "one" reached the log while the container still had two seconds to run: live, not at exit.
    assert ended - arrival["stdout:one"] >= 1.5
    assert arrival["stdout:one"] - started < ended - started - 1.5
    assert arrival["stdout:one"] < arrival["stderr:two"] < arrival["stdout:three"]


def test_timeout_stops_gracefully_then_removes(docker_client, settings, tmp_path: Path) -> None:
    log = RecordingLog()
    # The shell traps SIGTERM, so the stop is graceful: the trap's line must reach the log.
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    spec = container_job(command=["sh", "-c", script], timeout="2s", kill_grace="5s")
    started = time.monotonic()
    with pytest.raises(ContainerTimedOut, match="^container timed out after 2s; stopped and removed$"):
        execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    assert time.monotonic() - started < 8
    assert log.lines() == ["ready", "got TERM"]
    assert ours(docker_client, settings) == []


def test_timeout_kills_a_container_that_ignores_sigterm(docker_client, settings, tmp_path: Path) -> None:
    # PID 1 without a handler ignores SIGTERM: only the kill after the grace ends it.
    spec = container_job(command=["sleep", "600"], timeout="1s", kill_grace="3s")
    started = time.monotonic()
    with pytest.raises(ContainerTimedOut):
        execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=settings))
    assert time.monotonic() - started < 8
    assert ours(docker_client, settings) == []


def test_out_of_memory_is_reported_as_such(docker_client, settings, tmp_path: Path) -> None:
    # Command substitution keeps all 256 MiB in the shell's memory; the 32m limit ends it.
    script = "x=$(head -c 268435456 /dev/zero | tr '\\0' x); echo survived"
    spec = container_job(command=["sh", "-c", script], memory="32m", timeout="60s")
    with pytest.raises(ContainerFailed, match=r"^container killed: out of memory \(limit 32m\)$") as info:
        execute(spec, make_ctx(tmp_path, log=RecordingLog(), docker=settings))
    assert info.value.oom_killed is True
    assert ours(docker_client, settings) == []


def test_security_posture_is_applied_in_the_container(settings, tmp_path: Path) -> None:
    log = RecordingLog()
    spec = container_job(
        command=["sh", "-c", "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ls /sys/class/net"],
        capabilities=["CHOWN"],
    )
    execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    lines = log.lines()
    assert "CapEff:\t0000000000000001" in lines  # only CAP_CHOWN (bit 0) is left
    assert "NoNewPrivs:\t1" in lines
    assert "lo" in lines and "eth0" not in lines  # network: none


def test_env_holds_only_what_is_listed(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALES_API_TOKEN", "s3cret-token")
    monkeypatch.setenv("MODEL_FLAVOUR", "small")
    log = RecordingLog()
    spec = container_job(command=["env"], env={"GREETING": "hi {logical_date}"}, pass_env=["MODEL_FLAVOUR"])
    execute(spec, make_ctx(tmp_path, log=log, docker=settings))
    env = dict(line.split("=", 1) for line in log.lines() if "=" in line)
    assert env["GREETING"] == "hi 2026-11-05" and env["MODEL_FLAVOUR"] == "small"
    assert "SALES_API_TOKEN" not in env
    assert env["SCHEDULER_JOB"] == "test_job" and env["SCHEDULER_RUN_ID"] == "1"


def test_data_volume_and_user(settings, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    spec = container_job(command=["sh", "-c", "id -u; echo written > /data/out.txt"], data_mount="/data",
                         user="65534:65534")
    log = RecordingLog()
    execute(spec, make_ctx(data, log=log, docker=settings))
    assert log.lines() == ["65534"]
    assert (data / "out.txt").read_text() == "written\n"


def test_image_outside_allowlist_is_refused_before_any_api_call(tmp_path: Path) -> None:
    calls: list[object] = []

    def factory(settings: DockerSettings) -> Any:
        calls.append(settings)
        raise AssertionError("no client may be created for a refused job")

    settings = DockerSettings(allowed_images=("registry.example.com/*",))
    with pytest.raises(ConfigError, match="image 'scheduler-test-busybox:latest' is not in docker.allowed_images"):
        execute(container_job(command=["true"]), make_ctx(tmp_path, docker=settings), client_factory=factory)
    assert calls == []


def test_missing_image_with_pull_never_fails_clearly(settings, tmp_path: Path) -> None:
    spec = container_job(image="scheduler-test-absent:never", pull="never")
    with pytest.raises(ImageUnavailable, match="not on the Docker engine and pull is 'never'"):
        execute(spec, make_ctx(tmp_path, docker=settings))
