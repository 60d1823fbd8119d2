"""Helpers for the image tests: the docker CLI, a per-test box of containers, config and history."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("SCHEDULER_TEST_IMAGE_TAG", "scheduler:test")
BASE_IMAGE = os.environ.get("SCHEDULER_BASE_IMAGE", "scheduler-base:bookworm")
BUSYBOX = "scheduler-test-busybox:latest"
INPUTS_LABEL = "org.cron-scheduler.build-inputs"
TEST_LABEL = "org.cron-scheduler.image-test"
# How the README tells users to run the image.
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
BUILD_INPUTS = ("Dockerfile", ".dockerignore", "requirements.lock", "scripts/build-image.sh")
BUILD_TREES = ("scheduler", "jobs", "config")


def no_engine(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Docker engine required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; with ``check`` a non-zero exit fails the test with the CLI's output."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    """``docker <kind> inspect name`` as a dict, or None when there is no such object."""
    proc = docker(kind, "inspect", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def build_inputs_hash(base_id: str) -> str:
    """A hash of everything the image is built from (what .dockerignore lets in, plus the base)."""
    digest = hashlib.sha256(base_id.encode())
    files = [REPO / name for name in BUILD_INPUTS]
    for tree in BUILD_TREES:
        files += [p for p in (REPO / tree).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")]
    for path in sorted(files):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


class Containers:
    """Starts containers and volumes for one test, all labelled; :meth:`cleanup` removes them."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.ids: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"scheduler-test-{uuid.uuid4().hex[:10]}"
        docker("volume", "create", "--label", f"{TEST_LABEL}=1", name)
        self.volumes.append(name)
        return name

    def run(self, *args: str, options: Sequence[str] = (), timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        """``docker run --rm [options] IMAGE args`` in the foreground; the finished process."""
        return docker("run", "--rm", "--label", f"{TEST_LABEL}=1", *options, self.image, *args,
                      check=False, timeout=timeout)

    def start(self, *args: str, options: Sequence[str] = ()) -> str:
        """``docker run -d [options] IMAGE args``; the container id."""
        cid = docker("run", "-d", "--label", f"{TEST_LABEL}=1", *options, self.image, *args).stdout.strip()
        self.ids.append(cid)
        return cid

    def logs(self, cid: str) -> list[str]:
        proc = docker("logs", cid, check=False)
        return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]

    def cleanup(self) -> None:
        for cid in self.ids:
            docker("rm", "-f", "-v", cid, check=False)
        for name in self.volumes:
            docker("volume", "rm", "-f", name, check=False)


def with_config(config: Path, volume: str, *extra: str) -> list[str]:
    """``docker run`` options: ``config`` read-only at /config (SCHEDULER_CONFIG), ``volume`` at /data."""
    return ["-v", f"{config}:/config:ro", "-e", "SCHEDULER_CONFIG=/config", "-v", f"{volume}:/data", *extra]


def history(box: Containers, config: Path, volume: str, job: str | None = None) -> list[dict[str, Any]]:
    """The run records on ``volume``, as the image's own ``history --json`` reports them."""
    proc = box.run("history", *([job] if job else []), "--json", "--limit", "1000",
                   options=with_config(config, volume))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Every line parsed as JSON; a line that is not JSON fails the test."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"log line is not JSON: {line!r}") from None
    return out
