"""Helpers shared by the container-kind tests: the test image, a recording logger, contexts."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler.kinds.base import RunContext
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_INSTANCE, LABEL_JOB, LABEL_MANAGED_BY, LABEL_RUN_ID, ContainerJob

TEST_IMAGE = "scheduler-test-busybox:latest"
REPO_ROOT = Path(__file__).resolve().parents[2]


def no_engine(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Docker engine required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


def busybox_rootfs_tar() -> bytes:
    """The test image's root filesystem (FROM scratch + static busybox), as .ci/docker-up.sh makes it."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise FileNotFoundError("/bin/busybox (install busybox-static)")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("proc", 0o755), ("sys", 0o755),
                           ("dev", 0o755), ("data", 0o755)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                           ("etc/group", "root:x:0:\nnogroup:x:65534:\n")):  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def ensure_test_image(client: Any) -> str:
    """Import the busybox test image into ``client``'s engine unless it is there already."""
    import docker.errors

    try:
        client.api.inspect_image(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        client.api.import_image_from_data(
            busybox_rootfs_tar(), repository=TEST_IMAGE.split(":")[0], tag="latest",
            changes=['CMD ["/bin/sh"]', "ENV PATH=/bin"],
        )  # fmt: skip
    return TEST_IMAGE


@dataclass
class RecordingLog:
    """Stands in for the run's structlog logger; records (monotonic time, level, event, fields)."""

    records: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((time.monotonic(), level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def output(self) -> list[tuple[str, str]]:
        """``(stream, line)`` of each container output line, in arrival order."""
        return [(kw["stream"], kw["line"]) for _, _, event, kw in self.records if event == "output"]

    def lines(self) -> list[str]:
        return [line for _, line in self.output()]


def make_ctx(
    data_dir: Path, *, job: str = "test_job", run_id: int = 1, log: Any = None, docker: DockerSettings | None = None
) -> RunContext:
    start = datetime(2026, 11, 5, tzinfo=UTC)
    kwargs: dict[str, Any] = dict(
        job=job, run_id=run_id, attempt=1, slot=start, logical_date=date(2026, 11, 5),
        data_interval_start=start, data_interval_end=start, data_dir=data_dir, log=log,
    )  # fmt: skip
    if "docker" in RunContext.__dataclass_fields__:
        kwargs["docker"] = docker
    else:  # RunContext predates the docker field: attach it the way the worker would
        ctx = RunContext(**kwargs)
        object.__setattr__(ctx, "docker", docker)
        return ctx
    return RunContext(**kwargs)


def container_job(**fields: Any) -> ContainerJob:
    return ContainerJob.model_validate({"kind": "container", "image": TEST_IMAGE, **fields})


def ours(client: Any, settings: DockerSettings) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={"label": [f"{LABEL_INSTANCE}={settings.instance}"]})


def session_leftovers(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Containers the scheduler labelled whose instance label starts with ``prefix`` (one session's)."""
    labelled = client.api.containers(all=True, filters={"label": [f"{LABEL_MANAGED_BY}=scheduler"]})
    return [c for c in labelled if (c.get("Labels") or {}).get(LABEL_INSTANCE, "").startswith(prefix)]


def session_services(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Swarm services the scheduler labelled whose instance label starts with ``prefix`` (none
    when the engine is not a swarm manager)."""
    if not (client.info().get("Swarm") or {}).get("ControlAvailable"):
        return []
    labelled = client.api.services(filters={"label": [f"{LABEL_MANAGED_BY}=scheduler"]})
    return [s for s in labelled if (s["Spec"].get("Labels") or {}).get(LABEL_INSTANCE, "").startswith(prefix)]


def docker_cli() -> str:
    cli = shutil.which("docker")
    if cli is None:
        no_engine("the docker CLI is not installed")
    return cli  # type: ignore[return-value]


def services_of(client: Any, instance: str) -> list[dict[str, Any]]:
    """Swarm services labelled with ``instance``."""
    return client.api.services(filters={"label": [f"{LABEL_INSTANCE}={instance}"]})


def task_containers(client: Any, service_id: str) -> list[dict[str, Any]]:
    """The containers of a Swarm service's tasks on this engine's node."""
    return client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"})


def cli(settings: DockerSettings, *args: str) -> str:
    """Run the docker CLI against the settings' engine; its stdout."""
    from scheduler.kinds.container.engine import resolve_host

    return subprocess.run([docker_cli(), "-H", resolve_host(settings), *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def orphan_service(settings: DockerSettings, job: str, run_id: int) -> str:
    """A service of ours as a SIGKILLed scheduler would leave it: labelled, still running."""
    return cli(settings, "service", "create", "--detach", "--quiet", "--mode", "replicated-job",
               "--restart-condition", "none", "--no-resolve-image", "--name", f"sched-orphan-{uuid.uuid4().hex[:8]}",
               "--label", f"{LABEL_MANAGED_BY}=scheduler", "--label", f"{LABEL_JOB}={job}",
               "--label", f"{LABEL_RUN_ID}={run_id}", "--label", f"{LABEL_INSTANCE}={settings.instance}",
               TEST_IMAGE, "sleep", "600")  # fmt: skip
