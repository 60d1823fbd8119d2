"""The image as built: its entrypoint answers, its metadata says how it runs, and it stays small."""

from __future__ import annotations

import pytest
from image_helpers import HARDENED, Containers, inspect

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

MAX_SIZE = 450 * 1000 * 1000  # bytes, as `docker images` counts them


def test_help_exits_0(containers: Containers) -> None:
    proc = containers.run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: scheduler" in proc.stdout
    for command in ("run", "run-job", "validate", "health"):
        assert command in proc.stdout


def test_validate_the_baked_config_exits_0(containers: Containers) -> None:
    proc = containers.run("validate", options=HARDENED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "config OK" in proc.stdout


def test_metadata_runs_the_scheduler_unprivileged_as_pid1(image: str) -> None:
    info = inspect("image", image)
    assert info is not None
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/venv/bin/scheduler"]  # exec form: no shell in between
    assert config["Cmd"] == ["run"]
    assert config["WorkingDir"] == "/app"
    assert "/data" in (config.get("Volumes") or {})
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SCHEDULER_DATA_DIR"] == "/data"
    assert env["SCHEDULER_CONFIG"] == "/app/config"
    assert config["Healthcheck"]["Test"] == ["CMD", "/opt/venv/bin/scheduler", "health"]
    assert config.get("StopSignal") == "SIGTERM"
    labels = config.get("Labels") or {}
    assert labels["org.opencontainers.image.title"] == "cron-container-scheduler"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert info["Size"] <= MAX_SIZE, f"image is {info['Size'] / 1e6:.0f} MB, over {MAX_SIZE / 1e6:.0f} MB"


def test_runtime_has_no_pip_compiler_or_root(containers: Containers) -> None:
    probe = ("import importlib.util, os, shutil; "
             "print(os.getuid(), os.getgid(), importlib.util.find_spec('pip') is not None, "
             "[c for c in ('gcc', 'cc', 'pip', 'pip3') if shutil.which(c)])")
    proc = containers.run("-c", probe, options=("--entrypoint", "python3", *HARDENED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "10001 10001 False []"
