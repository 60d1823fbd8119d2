"""Fixtures for end-to-end tests of the real image on a real Docker engine.

The image is built once per session with ``scripts/build-image.sh`` (offline: wheelhouse on the
host, base from ``SCHEDULER_BASE_IMAGE``, default the debootstrap ``scheduler-base:bookworm``,
built when missing).  An existing ``scheduler:test`` is reused only when its
``org.cron-scheduler.build-inputs`` label equals the hash of the current build inputs (Dockerfile,
lock, code, config, base image id), so a stale image is never tested.

Without an engine the tests skip, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from image_helpers import (
    BASE_IMAGE,
    BUSYBOX,
    IMAGE,
    INPUTS_LABEL,
    REPO,
    Containers,
    build_inputs_hash,
    inspect,
    no_engine,
)


@pytest.fixture(scope="session")
def engine() -> None:
    """A reachable engine with the busybox test image (made by .ci/docker-up.sh when missing)."""
    if shutil.which("docker") is None:
        no_engine("the docker CLI is not installed")
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          check=False, timeout=30)
    if proc.returncode != 0:
        no_engine((proc.stderr.strip().splitlines() or ["docker info failed"])[-1])
    if inspect("image", BUSYBOX) is None:
        subprocess.run(["bash", str(REPO / ".ci/docker-up.sh")], check=True, timeout=300)


@pytest.fixture(scope="session")
def image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``scheduler:test`` built from the current tree (reused when its inputs are unchanged)."""
    base = inspect("image", BASE_IMAGE)
    if base is None:
        if BASE_IMAGE != "scheduler-base:bookworm":
            pytest.fail(f"base image {BASE_IMAGE} (SCHEDULER_BASE_IMAGE) does not exist", pytrace=False)
        # debootstrap piped into `docker import`: about a minute (CI builds it before the tests).
        subprocess.run(["bash", str(REPO / ".ci/docker-up.sh"), "--base-only"], check=True, timeout=600)
        base = inspect("image", BASE_IMAGE)
        assert base is not None, f"{BASE_IMAGE} was not built"
    wanted = build_inputs_hash(base["Id"])
    current = inspect("image", IMAGE)
    if current and (current["Config"].get("Labels") or {}).get(INPUTS_LABEL) == wanted:
        return IMAGE
    log = tmp_path_factory.mktemp("image-build") / "build.log"
    with log.open("w") as out:
        proc = subprocess.run(["bash", str(REPO / "scripts/build-image.sh"), "--tag", IMAGE, "--base", BASE_IMAGE,
                               "--label", f"{INPUTS_LABEL}={wanted}"],
                              stdout=out, stderr=subprocess.STDOUT, timeout=900, cwd=REPO, check=False)
    if proc.returncode != 0:
        pytest.fail(f"image build failed ({log}):\n{log.read_text()[-4000:]}", pytrace=False)
    return IMAGE


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    """Containers and volumes for one test; all removed afterwards."""
    box = Containers(image)
    yield box
    box.cleanup()


@pytest.fixture
def config_dir(tmp_path: Path) -> Callable[[str], Path]:
    """Write ``jobs.yaml`` into a fresh directory readable by the image's unprivileged user."""

    def write(text: str) -> Path:
        root = tmp_path / f"config-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        root.chmod(0o755)  # bind-mounted: the directory's own mode is what the container sees
        path = root / "jobs.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        path.chmod(0o644)
        return root

    return write
