"""Running one container job attempt, and cleaning up after runs that did not finish.

The lifecycle of an attempt: check the spec against ``docker:`` again, make sure the image is
there (``pull``), create the container with our labels, attach to its output *before* starting it
(so no line is lost), start it, stream each line into the run's log as it arrives, wait with the
job's timeout, read the exit state (code, OOM kill), and always remove the container once its
output has been collected.

Invariant: when :func:`execute` returns or raises, the container it created is gone, except when
the worker is SIGKILLed before it could clean up; such containers keep our labels and
:func:`cleanup_orphans` removes them when the daemon starts again.

With ``docker.backend: swarm`` each entry point hands over to ``swarm_run`` (one Swarm service
per attempt instead of one container).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import docker
import docker.errors
import requests.exceptions

from scheduler.config.sizes import format_size
from scheduler.errors import JobFailed
from scheduler.kinds.base import RunContext
from scheduler.kinds.container.attempt import (
    LOG_DRAIN_SECONDS,
    begin,
    fmt_duration,
    guarded,
    instance_labels,
    job_and_run_id,
    retire_each,
    settings_of,
)
from scheduler.kinds.container.engine import ClientFactory, make_client
from scheduler.kinds.container.errors import ContainerFailed, ContainerTimedOut, GpuUnavailable, ImageUnavailable
from scheduler.kinds.container.logs import LineStreamer
from scheduler.kinds.container.payload import RunFacts, build_create_request
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import ContainerJob


def _is_gpu_error(exc: docker.errors.APIError) -> bool:
    text = str(exc.explanation or exc).lower()
    return "could not select device driver" in text or "nvidia" in text or "gpu" in text


def ensure_image(client: docker.DockerClient, image: str, policy: str, log: Any) -> None:
    """Apply the job's ``pull`` policy; raise :class:`ImageUnavailable` with the reason."""
    if policy != "always":
        try:
            client.api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            if policy == "never":
                raise ImageUnavailable(f"image {image} is not on the Docker engine and pull is 'never'") from None
    log.info("pulling image", image=image)
    try:
        client.images.pull(image)
    except docker.errors.APIError as exc:
        raise ImageUnavailable(f"cannot pull image {image}: {exc.explanation or exc}") from None


def _stop_grace(spec: ContainerJob) -> int:
    """Seconds between the engine's SIGTERM and SIGKILL when a timeout or shutdown stops the
    container: the job's ``kill_grace`` less a margin, since the runner's own SIGKILL follows
    ``kill_grace`` after its SIGTERM and removal must still fit in."""
    return max(0, int(spec.kill_grace.total_seconds()) - 2)


def _remove(client_factory: ClientFactory, settings: DockerSettings, cid: str, grace: int | None, log: Any) -> None:
    """Stop (when ``grace`` is given) and remove, on a fresh client: the run's own client may be
    mid-request when a signal lands."""
    try:
        client = client_factory(settings)
    except JobFailed as exc:
        log.error("cannot remove container: engine unreachable", container=cid[:12], error=str(exc))
        return
    try:
        if grace is not None:
            client.api.stop(cid, timeout=grace)
        _remove_quietly(client, cid)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        log.error("cannot remove container", container=cid[:12], error=str(exc.explanation or exc))
    finally:
        client.close()


def _remove_quietly(client: docker.DockerClient, cid: str) -> None:
    """Remove; a container already gone or being removed by someone else is fine."""
    try:
        client.api.remove_container(cid, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: "removal ... is already in progress"
            raise


def execute(spec: ContainerJob, ctx: RunContext, *, client_factory: ClientFactory = make_client) -> dict[str, Any]:
    """Run one attempt of a container job; see the module docstring for the lifecycle.

    Returns ``{"exit_code", "container_id", "oom_killed", "gpu_fallback", "image"}``; raises a
    :class:`JobFailed` subclass for a non-zero exit, an OOM kill, a timeout or a missing GPU, and
    :class:`Interrupted` when SIGTERM stopped the attempt.
    """
    settings = settings_of(ctx)
    if settings.backend == "swarm":
        from scheduler.kinds.container import swarm_run  # imports this module

        return swarm_run.execute(spec, ctx, client_factory=client_factory)
    log, facts = begin(spec, ctx, settings)

    def stop(cid: str, signum: int) -> None:
        log.warning("stopping container", container=cid[:12], signal=signum)
        _remove(client_factory, settings, cid, _stop_grace(spec), log)

    return guarded(lambda state: _attempt(spec, settings, facts, log, client_factory, state), "cid", stop,
                   lambda cid: _remove(client_factory, settings, cid, 0, log))


def _attempt(
    spec: ContainerJob,
    settings: DockerSettings,
    facts: RunFacts,
    log: Any,
    client_factory: ClientFactory,
    state: dict[str, Any],
) -> dict[str, Any]:
    client = client_factory(settings)
    try:
        ensure_image(client, spec.image, spec.pull, log)
        gpu_fallback = False
        while True:
            request = build_create_request(spec, settings, facts, with_gpus=not gpu_fallback)
            cid = client.api.create_container(**request)["Id"]
            state["cid"] = cid
            output = client.api.attach(cid, stdout=True, stderr=True, stream=True, logs=True, demux=True)
            streamer = LineStreamer(output, log)
            streamer.start()
            try:
                client.api.start(cid)
            except docker.errors.APIError as exc:
                streamer.close()
                if spec.gpus is None or gpu_fallback or not _is_gpu_error(exc):
                    raise JobFailed(f"cannot start container: {exc.explanation or exc}") from None
                _remove_quietly(client, cid)
                state["cid"] = None
                reason = str(exc.explanation or exc)
                if spec.gpu_policy == "required":
                    raise GpuUnavailable(f"GPU required but the Docker engine cannot provide one: {reason}") from None
                log.warning("no GPU available; running without GPU (gpu_policy: preferred)", reason=reason)
                gpu_fallback = True
                continue
            break
        log.info("container started", container=cid[:12], image=spec.image,
                 gpus=not gpu_fallback and spec.gpus is not None)
        exit_code, timed_out = _wait(client, cid, spec.timeout)
        if timed_out:
            log.warning("timeout reached; stopping container", timeout=str(spec.timeout), container=cid[:12])
            client.api.stop(cid, timeout=_stop_grace(spec))
        streamer.join(LOG_DRAIN_SECONDS)
        try:
            info = client.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:  # removed under us (a shutdown's stop_all, say)
            info = {}
        exit_code = info.get("ExitCode", -1) if exit_code is None else exit_code
        oom = bool(info.get("OOMKilled"))
        _remove_quietly(client, cid)
        state["cid"] = None
    finally:
        client.close()

    result = {"exit_code": exit_code, "container_id": cid, "oom_killed": oom, "gpu_fallback": gpu_fallback,
              "image": spec.image}
    if gpu_fallback:
        result["warning"] = "ran without GPU: the Docker engine cannot provide one"
    limit = spec.effective_limits(settings.defaults).memory
    if timed_out:
        raise ContainerTimedOut(
            f"container timed out after {fmt_duration(spec.timeout)}; stopped and removed",
            container_exit_code=exit_code, oom_killed=oom,
        )
    if oom and exit_code != 0:
        raise ContainerFailed(
            f"container killed: out of memory (limit {format_size(limit) if limit else 'none'})",
            container_exit_code=exit_code,
            oom_killed=True,
        )
    if exit_code != 0:
        raise ContainerFailed(f"container exited with code {exit_code}", container_exit_code=exit_code)
    if oom:
        log.warning("a process in the container was killed for lack of memory; the container exited 0")
    log.info("container exited", exit_code=exit_code)
    return result


def _wait(client: docker.DockerClient, cid: str, timeout: timedelta | None) -> tuple[int | None, bool]:
    """Block until the container exits or ``timeout`` passes: ``(exit code, timed out)``.

    Waits in slices so a long timeout does not depend on one HTTP read staying open for hours
    through proxies, and so the deadline is ours, not the socket's.
    """
    deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
    while True:
        remaining = 300.0 if deadline is None else min(300.0, deadline - time.monotonic())
        if remaining <= 0:
            return None, True
        try:
            status = client.api.wait(cid, timeout=max(remaining, 0.05))
            return int(status.get("StatusCode", -1)), False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if "timed out" not in str(exc).lower() and not isinstance(exc, requests.exceptions.ReadTimeout):
                raise
            continue


def _ours(client: docker.DockerClient, settings: DockerSettings, running_only: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.api.containers(all=not running_only,
                                                        filters={"label": instance_labels(settings)})
    return found


def _stop_and_remove(
    settings: DockerSettings | None, grace: float | None, running_only: bool, client_factory: ClientFactory
) -> list[tuple[str, int]]:
    settings = settings or DockerSettings()
    grace_s = int(settings.stop_grace.total_seconds() if grace is None else grace)
    client = client_factory(settings)
    try:
        found = _ours(client, settings, running_only)

        def one(c: dict[str, Any]) -> tuple[str, int]:
            labels = c.get("Labels") or {}
            try:
                if c.get("State") == "running":
                    client.api.stop(c["Id"], timeout=grace_s)
                _remove_quietly(client, c["Id"])
            except docker.errors.NotFound:
                pass
            return job_and_run_id(labels)

        return retire_each(found, one)
    finally:
        client.close()


def cleanup_orphans(
    settings: DockerSettings | None = None, *, grace: float | None = None, client_factory: ClientFactory = make_client
) -> list[tuple[str, int]]:
    """Stop and remove every container this scheduler instance labelled (call on daemon start,
    when none of ours can legitimately be running).  Returns ``(job, run_id)`` of each, for the
    daemon to mark those runs ``abandoned``.  Under ``backend: swarm`` this instance's services
    go first, then any container an earlier engine-backend run left."""
    removed: list[tuple[str, int]] = []
    if settings is not None and settings.backend == "swarm":
        from scheduler.kinds.container.swarm_run import cleanup_services

        removed = cleanup_services(settings, grace=grace, client_factory=client_factory)
    return removed + _stop_and_remove(settings, grace, running_only=False, client_factory=client_factory)


def stop_all(
    settings: DockerSettings | None = None, grace: float | None = None, *, client_factory: ClientFactory = make_client
) -> list[tuple[str, int]]:
    """Stop and remove this instance's running containers within ``grace`` (shutdown); under
    ``backend: swarm`` retire its services the same way."""
    if settings is not None and settings.backend == "swarm":
        from scheduler.kinds.container.swarm_run import cleanup_services

        return cleanup_services(settings, grace=grace, client_factory=client_factory)
    return _stop_and_remove(settings, grace, running_only=True, client_factory=client_factory)
