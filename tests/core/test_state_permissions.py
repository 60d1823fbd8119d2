"""A state store the process may not write is a setup error: exit 2, one line, and the fix.

The tests run as root, which no file permission stops, so the CLI runs as uid 10001 (the image's
user) in a real child process, against directories owned by root.  That needs an interpreter the
uid may execute: this one, or the system's of the same version with our packages on PYTHONPATH
(a pyenv interpreter under /root is out of its reach).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UID = 10001
COMMANDS = [
    ["history"],
    ["status"],
    ["run-job", "hello"],
    ["backfill", "hello", "--from", "2026-11-01", "--to", "2026-11-02"],
    ["run"],
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    paths = dict.fromkeys([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["HOME"] = "/tmp"
    return env


def _as_uid() -> dict[str, object]:
    return {"user": UID, "group": UID, "extra_groups": []} if os.getuid() == 0 else {}


@cache
def interpreter() -> str | None:
    """A Python of this version that uid 10001 can run with our packages importable."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in dict.fromkeys([sys.executable, f"/usr/bin/python{version}", shutil.which(f"python{version}")]):
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import scheduler.cli, pydantic, yaml"], env=_env(),
                                   capture_output=True, timeout=60, cwd="/", **_as_uid())  # type: ignore[call-overload]
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    return None


def scheduler_as_uid(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    python = interpreter()
    if python is None:
        message = f"no Python {sys.version_info.major}.{sys.version_info.minor} that uid {UID} may run"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([python, "-m", "scheduler", *args], env=_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=120, **_as_uid())  # type: ignore[call-overload]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A fresh directory uid 10001 can reach (pytest's own base directory is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="state-perms-"))
    path.chmod(0o755)
    yield path
    for item in path.rglob("*"):  # give back the write bits a test took away, then remove
        if item.is_dir():
            item.chmod(0o755)
    path.chmod(0o755)
    shutil.rmtree(path)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A config anyone may read and a data dir only root may write (mode 755, owned by root)."""
    config = tmp_path / "jobs.yaml"
    config.write_text("jobs:\n  hello:\n    kind: command\n    schedule: '0 3 * * *'\n    command: ['true']\n")
    data = tmp_path / "data"
    data.mkdir()
    if os.getuid() != 0:
        data.chmod(0o555)  # not root: take the write bit from ourselves
    return config, data


def assert_setup_error(proc: subprocess.CompletedProcess[str], blocked: Path, fix_dir: Path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: cannot open "), line
    assert f"{blocked} (owned by uid " in line and "is not writable by uid" in line
    assert f"chown -R {os.getuid() if os.getuid() else UID} {fix_dir}" in line
    if os.getuid() == 0:
        assert "or run the container with --user 0" in line
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_store_command_exits_2_with_the_fix(setup: tuple[Path, Path], tmp_path: Path, command: list[str]) -> None:
    config, data = setup
    proc = scheduler_as_uid(*command, "--config", str(config), "--data-dir", str(data), cwd=tmp_path)
    assert_setup_error(proc, data, data)
    assert not (data / ".scheduler").exists()


def test_an_existing_store_owned_by_another_user(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    store = data / ".scheduler" / "state.db"
    store.parent.mkdir()
    sqlite3.connect(store).close()
    store.chmod(0o644)
    if os.getuid() != 0:
        store.chmod(0o444)
    proc = scheduler_as_uid("history", "--config", str(config), "--data-dir", str(data), cwd=tmp_path)
    assert_setup_error(proc, store, store.parent)


def test_health_with_a_heartbeat_but_no_writable_store(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    heartbeat = data / ".scheduler" / "heartbeat"
    heartbeat.parent.mkdir()
    heartbeat.touch()
    heartbeat.parent.chmod(0o755 if os.getuid() == 0 else 0o555)
    proc = scheduler_as_uid("health", "--config", str(config), "--data-dir", str(data), cwd=tmp_path)
    assert_setup_error(proc, heartbeat.parent, heartbeat.parent)


def test_a_data_dir_that_cannot_be_created(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    missing = data / "nested" / "deeper"
    proc = scheduler_as_uid("run-job", "hello", "--config", str(config), "--data-dir", str(missing), cwd=tmp_path)
    assert_setup_error(proc, data, data)
    assert "cannot open the data dir" in proc.stderr


def test_a_writable_data_dir_still_works(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    mine = tmp_path / "mine"
    mine.mkdir()
    if os.getuid() == 0:
        os.chown(mine, UID, UID)
    proc = scheduler_as_uid("run-job", "hello", "--config", str(config), "--data-dir", str(mine), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (mine / ".scheduler" / "state.db").exists()
