"""Running one container job attempt as a Swarm service (``docker.backend: swarm``).

The lifecycle of an attempt: check the spec against ``docker:`` again, create one
``replicated-job`` service (restart condition ``none``, our labels), follow its logs into the
run's log as lines arrive, poll its task until it ends, and read the exit code from the task
(``Status.ContainerStatus.ExitCode``).  A task Swarm cannot place (no node matches the
constraints or has the resources) stays ``pending``: after ``start_timeout`` the run fails with
Swarm's reason.  A timeout, a stop (SIGTERM) or the end of the run retires the service (below)
and removes it.

Retiring: removing a job service alone leaves its task behind (Engine 20.10: the task of a
removed ``replicated-job`` service keeps running, and an exited one keeps its container on the
node).  So a task still running is stopped first by updating the service to a new job iteration
that no node can take (a constraint nothing satisfies): Swarm then stops the task's container
(SIGTERM, SIGKILL after the stop grace) and removes it, on whichever node it ran.  The container
of an ended task is removed directly when it ran on the node of the engine we talk to.  Then
the service is removed.

Invariant: when :func:`execute` returns or raises, the service it created is gone, except when
the worker is SIGKILLed first; such services keep our labels and :func:`cleanup_services`
removes them when the daemon starts again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types.daemon import CancellableStream

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
from scheduler.kinds.container.engine import ClientFactory, make_client, resolve_host
from scheduler.kinds.container.errors import ContainerFailed, ContainerTimedOut
from scheduler.kinds.container.logs import LineStreamer
from scheduler.kinds.container.payload import RunFacts
from scheduler.kinds.container.settings import DockerSettings
from scheduler.kinds.container.spec import LABEL_MANAGED_BY, MANAGED_BY, ContainerJob
from scheduler.kinds.container.swarm_payload import build_service_request

DEFAULT_START_TIMEOUT = timedelta(minutes=5)
# No node has this label: the retiring iteration is never placed.
RETIRED_CONSTRAINT = "node.labels.org.cron-scheduler.retired==true"
# Task states after which nothing more happens (``remove``: the service is being removed).
TERMINAL = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})


class SwarmStartTimedOut(JobFailed):
    """The task was not running within ``start_timeout``; the message carries Swarm's reason."""


class ServiceLogStream:
    """A service's output as demuxed ``(stdout, stderr)`` frames, the shape ``LineStreamer`` reads.

    The request is made on first iteration (in the reader's thread, so a slow answer never blocks
    the run); :meth:`close` may be called from another thread at any time, before or after."""

    def __init__(self, client: docker.DockerClient, service_id: str, *, follow: bool) -> None:
        self._client = client
        self._service_id = service_id
        self._follow = follow
        self._lock = threading.Lock()
        self._stream: CancellableStream | None = None
        self._closed = False

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        api = self._client.api
        params = {"follow": self._follow, "stdout": True, "stderr": True, "timestamps": False, "details": False}
        response = api._get(api._url("/services/{0}/logs", self._service_id), params=params, stream=True)
        socket = api._get_raw_response_socket(response)  # raises the API error of a bad answer
        if self._follow:  # a quiet job may print nothing for longer than the client's timeout
            api._disable_socket_timeout(socket)
        stream = CancellableStream(_demux(response), response)
        with self._lock:
            self._stream = stream
            closed = self._closed
        if closed:
            stream.close()
            return
        yield from stream

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a half-dead socket may fail; the stream is over either way
                pass


def _demux(response: requests.Response) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Frames of a multiplexed log stream as ``(stdout, stderr)``.

    The SDK's ``service_logs()`` merges the two streams, and its frame reader for attach reads
    the raw socket, which here carries HTTP chunked encoding: so the 8-byte frame headers are read
    from the decoded body (stream 1 stdout, 2 stderr, 3 the engine's own errors)."""
    raw = response.raw
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        length = int.from_bytes(header[4:8], "big")
        data = raw.read(length) if length else b""
        if header[0] == 1:
            yield data, None
        else:
            yield None, data


def _network_target(client: docker.DockerClient, spec: ContainerJob, settings: DockerSettings) -> str:
    """The swarm network a task joins.  Swarm has no ``none`` network, so ``none`` means the
    internal overlay network ``docker.isolated_network`` (created when missing): no gateway, no
    route off it."""
    name = spec.network or settings.network
    if name != "none":
        return name
    name = settings.isolated_network
    try:
        info = client.api.inspect_network(name)
    except docker.errors.NotFound:
        try:
            created: str = client.api.create_network(
                name, driver="overlay", internal=True, check_duplicate=True,
                labels={LABEL_MANAGED_BY: MANAGED_BY},
            )["Id"]  # fmt: skip
            return created
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: created meanwhile by another run
                raise JobFailed(f"cannot create the isolated network {name}: {exc.explanation or exc}") from None
            info = client.api.inspect_network(name)
    if not info.get("Internal") or info.get("Scope") != "swarm":
        raise JobFailed(f"network {name} (docker.isolated_network) exists but is not an internal swarm network")
    network_id: str = info["Id"]
    return network_id


def _task(client: docker.DockerClient, service_id: str) -> dict[str, Any] | None:
    """The service's task (restart condition none and one completion: there is only one)."""
    tasks = client.api.tasks(filters={"service": service_id})
    return max(tasks, key=lambda t: t.get("CreatedAt", "")) if tasks else None


def _reason(task: dict[str, Any] | None) -> str:
    status = (task or {}).get("Status") or {}
    return status.get("Err") or status.get("Message") or "no task yet"


def _stop_task(client: docker.DockerClient, sid: str, grace: float | None) -> None:
    """Update the service to a job iteration no node can take: Swarm marks the old task for
    removal, stops its container (SIGTERM, SIGKILL after the stop grace) and removes it, on
    whichever node.  Returns once Swarm has marked it (at once); the stop goes on without us."""
    for _ in range(3):  # an update races with Swarm's own writes ("update out of sequence")
        service = client.api.inspect_service(sid)
        spec = service["Spec"]
        template = dict(spec["TaskTemplate"])
        container = dict(template.get("ContainerSpec") or {})
        if grace is not None:
            container["StopGracePeriod"] = int(grace * 1_000_000_000)
        template["ContainerSpec"] = container
        template["Placement"] = {"Constraints": [RETIRED_CONSTRAINT]}
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        try:
            client.api.update_service(sid, service["Version"]["Index"], task_template=template, name=spec["Name"],
                                      labels=spec.get("Labels"), mode=spec["Mode"])  # fmt: skip
            break
        except docker.errors.APIError as exc:
            if isinstance(exc, docker.errors.NotFound) or "out of sequence" not in str(exc.explanation or exc):
                raise
    iteration = int((((client.api.inspect_service(sid).get("JobStatus") or {}).get("JobIteration") or {})
                     .get("Index")) or 0)  # fmt: skip

    def marked() -> bool:
        return all(
            int((t.get("JobIteration") or {}).get("Index") or 0) >= iteration
            or t.get("DesiredState") in ("remove", "shutdown") or _state(t) in TERMINAL
            for t in _tasks(client, sid)
        )

    deadline = time.monotonic() + 10.0
    while not marked() and time.monotonic() < deadline:
        time.sleep(0.02)


def _tasks(client: docker.DockerClient, sid: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = client.api.tasks(filters={"service": sid})
    return tasks


def _state(task: dict[str, Any] | None) -> str:
    state: str = ((task or {}).get("Status") or {}).get("State", "new")
    return state


def retire_service(client: docker.DockerClient, sid: str, *, grace: float | None = None) -> None:
    """Have Swarm stop the service's task if it still runs (within ``grace``, default the spec's
    stop grace) and remove its container, remove an ended task's container where this engine can
    reach it, and remove the service.  Does not wait for the stop itself.

    A job task that has ended keeps its container after its service is removed (Engine 20.10),
    so the container of a task on this engine's own node is removed here; on other nodes it
    carries our labels for ``docker container prune``.  A service already gone is fine."""
    try:
        tasks = _tasks(client, sid)
        # Even a task not placed yet must be retired: once placed it would run without a service.
        if not tasks or not all(_state(t) in TERMINAL for t in tasks):
            _stop_task(client, sid, grace)
            tasks = _tasks(client, sid)
    except docker.errors.NotFound:
        return
    here = ((client.info().get("Swarm") or {}).get("NodeID")) if tasks else None
    for task in tasks:
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if cid and task.get("NodeID") == here:
            try:
                client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: Swarm is removing it already
                    raise
    try:
        client.api.remove_service(sid)
    except docker.errors.NotFound:
        pass


def _remove_service(client_factory: ClientFactory, settings: DockerSettings, sid: str, log: Any) -> None:
    """Retire on a fresh client: the run's own may be mid-request when a signal lands."""
    try:
        client = client_factory(settings)
    except JobFailed as exc:
        log.error("cannot remove service: engine unreachable", service=sid[:12], error=str(exc))
        return
    try:
        retire_service(client, sid)
    except docker.errors.APIError as exc:
        log.error("cannot remove service", service=sid[:12], error=str(exc.explanation or exc))
    finally:
        client.close()


def execute(spec: ContainerJob, ctx: RunContext, *, client_factory: ClientFactory = make_client) -> dict[str, Any]:
    """Run one attempt as a Swarm service; see the module docstring for the lifecycle.

    Returns ``{"exit_code", "service_id", "task_id", "node_id", "image"}``; raises a
    :class:`JobFailed` subclass for a non-zero exit, a timeout, a task Swarm rejected or could not
    place in time, and :class:`Interrupted` when SIGTERM stopped the attempt.
    """
    settings = settings_of(ctx)
    log, facts = begin(spec, ctx, settings)

    def stop(sid: str, signum: int) -> None:
        log.warning("stopping the run: removing its service", service=sid[:12], signal=signum)
        _remove_service(client_factory, settings, sid, log)

    return guarded(lambda state: _attempt(spec, settings, facts, log, client_factory, state), "sid", stop,
                   lambda sid: _remove_service(client_factory, settings, sid, log))


def _attempt(
    spec: ContainerJob,
    settings: DockerSettings,
    facts: RunFacts,
    log: Any,
    client_factory: ClientFactory,
    state: dict[str, Any],
) -> dict[str, Any]:
    client = client_factory(settings)
    streamer: LineStreamer | None = None
    try:
        request = build_service_request(spec, settings, facts, network=_network_target(client, spec, settings))
        try:
            sid = client.api.create_service(**request)["ID"]
        except docker.errors.APIError as exc:
            raise JobFailed(f"cannot create the Swarm service on {resolve_host(settings)}: "
                            f"{exc.explanation or exc}") from None
        state["sid"] = sid
        streamer = LineStreamer(ServiceLogStream(client, sid, follow=True), log, flush_at_end=False)
        streamer.start()
        log.info("service created", service=sid[:12], name=request["name"], image=spec.image)
        task, timed_out = _wait(client, sid, spec, log)
        status = (task or {}).get("Status") or {}
        if timed_out:
            log.warning("timeout reached; stopping the task and removing the service",
                        timeout=fmt_duration(spec.timeout), service=sid[:12])  # fmt: skip
        # The output is complete once the task has ended; on a timeout, what it printed so far
        # (its container is removed with the service, and its logs with it).
        streamer.close()
        streamer.join(LOG_DRAIN_SECONDS)
        _catch_up(client, sid, streamer, log)
        retire_service(client, sid)
        state["sid"] = None
    except BaseException:
        if streamer is not None:  # its thread must not outlive the attempt on a dead socket
            streamer.close()
        raise
    finally:
        client.close()

    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    result = {"exit_code": code, "service_id": sid, "task_id": (task or {}).get("ID"),
              "node_id": (task or {}).get("NodeID"), "image": spec.image}
    if timed_out:  # the task was still running: it has no exit code of its own
        raise ContainerTimedOut(f"container timed out after {fmt_duration(spec.timeout)}; service removed")
    task_state = status.get("State")
    if task_state == "complete":
        log.info("container exited", exit_code=0)
        result["exit_code"] = 0
        return result
    if isinstance(code, int) and code != 0:
        raise ContainerFailed(f"container exited with code {code}", container_exit_code=code)
    raise JobFailed(f"Swarm task {task_state or 'gone'}: {_reason(task)}")


def _catch_up(client: docker.DockerClient, sid: str, streamer: LineStreamer, log: Any) -> None:
    """The output the live stream had not delivered yet (it never ends by itself)."""
    try:
        streamer.catch_up(ServiceLogStream(client, sid, follow=False))
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        log.warning("could not read the rest of the output", error=str(exc))
        streamer.catch_up(())


def _wait(client: docker.DockerClient, sid: str, spec: ContainerJob, log: Any) -> tuple[dict[str, Any] | None, bool]:
    """Poll the task until it ends: ``(task, timed out)``.  Raises :class:`SwarmStartTimedOut`
    when it is not running within ``start_timeout``.  The job's ``timeout`` counts from the
    service's creation, as the runner's own clock does from the worker's start."""
    start_timeout = spec.start_timeout or DEFAULT_START_TIMEOUT
    began = time.monotonic()
    deadline = None if spec.timeout is None else began + spec.timeout.total_seconds()
    started = False
    seen: str | None = None
    task: dict[str, Any] | None = None
    while True:
        try:
            task = _task(client, sid)
        except docker.errors.NotFound:
            raise JobFailed("the Swarm service was removed while the run was active") from None
        task_state = ((task or {}).get("Status") or {}).get("State", "new")
        if task_state != seen:
            seen = task_state
            if task_state == "running" and not started:
                log.info("task running", task=(task or {}).get("ID", "")[:12], node=(task or {}).get("NodeID", "")[:12])
        if task_state in TERMINAL:
            return task, False
        started = started or task_state == "running"
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return task, True
        if not started and now - began >= start_timeout.total_seconds():
            raise SwarmStartTimedOut(
                f"not started within start_timeout {fmt_duration(start_timeout)}: {_reason(task)} (task {task_state})"
            )
        # Fast at first (short jobs end in a second or two), then gentle on the manager.
        pause = 0.1 if now - began < 10 else 1.0
        limits = [pause] + ([deadline - now] if deadline is not None else [])
        if not started:
            limits.append(began + start_timeout.total_seconds() - now)
        time.sleep(max(0.01, min(limits)))


def _ours(client: docker.DockerClient, settings: DockerSettings) -> list[dict[str, Any]]:
    services: list[dict[str, Any]] = client.api.services(filters={"label": instance_labels(settings)})
    return services


def cleanup_services(
    settings: DockerSettings | None = None, *, grace: float | None = None, client_factory: ClientFactory = make_client
) -> list[tuple[str, int]]:
    """Retire every service this scheduler instance labelled (on daemon start: none of ours can
    be live then; on shutdown: the runs are being stopped), stopping their tasks within ``grace``
    (default ``docker.stop_grace``).  Returns ``(job, run_id)`` of each."""
    settings = settings or DockerSettings()
    grace_s = settings.stop_grace.total_seconds() if grace is None else grace
    client = client_factory(settings)
    try:
        found = _ours(client, settings)

        def one(service: dict[str, Any]) -> tuple[str, int]:
            labels = (service.get("Spec") or {}).get("Labels") or {}
            retire_service(client, service["ID"], grace=grace_s)
            return job_and_run_id(labels)

        return retire_each(found, one)
    finally:
        client.close()
