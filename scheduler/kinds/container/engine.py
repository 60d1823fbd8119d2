"""Reaching a Docker engine: ``docker.host``, else ``DOCKER_HOST``, else the local socket.

``tcp://`` hosts use TLS from ``docker.tls`` or, as the docker CLI does, from
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``; ``ssh://`` hosts go through the ``ssh`` client
(``~/.ssh/config`` and agent apply) unless ``use_ssh_client: false`` selects paramiko.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.constants
import docker.errors
import docker.tls

from scheduler.errors import JobFailed
from scheduler.kinds.container.settings import DockerSettings
from scheduler.neterrors import causes, classify

DEFAULT_HOST = "unix:///var/run/docker.sock"

# What builds the client of an engine: tests pass their own to count or break calls.
ClientFactory = Callable[[DockerSettings], docker.DockerClient]


class EngineUnavailable(JobFailed):
    """The engine could not be reached (socket missing, daemon down, TLS refused)."""


def resolve_host(settings: DockerSettings | None, environ: Mapping[str, str] | None = None) -> str:
    """The engine address in effect: the setting, then ``DOCKER_HOST``, then the local socket."""
    environ = os.environ if environ is None else environ
    if settings is not None and settings.host:
        return settings.host
    return environ.get("DOCKER_HOST") or DEFAULT_HOST


def _tls_config(settings: DockerSettings, host: str, environ: Mapping[str, str]) -> Any:
    if settings.tls is not None:
        tls = settings.tls
        return docker.tls.TLSConfig(
            client_cert=(tls.client_cert, tls.client_key) if tls.client_cert and tls.client_key else None,
            ca_cert=tls.ca_cert,
            verify=tls.ca_cert if (tls.verify and tls.ca_cert) else tls.verify,
        )
    if host.startswith("tcp://") and (environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH")):
        return docker.utils.kwargs_from_env(environment=dict(environ)).get("tls")
    return None


def make_client(
    settings: DockerSettings | None = None, environ: Mapping[str, str] | None = None
) -> docker.DockerClient:
    """A client for the configured engine.  Raises :class:`EngineUnavailable` with the address."""
    settings = settings or DockerSettings()
    environ = os.environ if environ is None else environ
    host = resolve_host(settings, environ)
    tls = _tls_config(settings, host, environ)
    auto = settings.api_version == "auto"
    try:
        client = docker.DockerClient(
            base_url=host,
            # "auto" is negotiated below, once the session is set up (the SDK would do it here).
            version=docker.constants.MINIMUM_DOCKER_API_VERSION if auto else settings.api_version,
            timeout=int(settings.timeout.total_seconds()) or 60,
            tls=tls or False,
            use_ssh_client=settings.use_ssh_client and host.startswith("ssh://"),
        )
        if tls:
            # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's CA per request;
            # the engine's CA must win over a bundle set for outbound HTTPS (a proxy's CA, say).
            client.api.trust_env = False
        if auto:
            # What the SDK's version="auto" does, after the line above so it already uses the right CA.
            client.api._version = client.api._retrieve_server_version()
        return client
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"cannot reach the Docker engine at {host}: {unreachable_reason(host, exc)}") from None


def unreachable_reason(host: str, exc: BaseException) -> str:
    """Why the engine at ``host`` did not answer, in words, with what to do about it.

    The SDK's text is a urllib3 repr ("Error while fetching server API version: ('Connection
    aborted.', FileNotFoundError(2, ...))"); errors that are not about the connection keep it.
    """
    chain = list(causes(exc))
    if host.startswith("unix://"):
        socket_path = host[len("unix://"):]
        if any(isinstance(e, FileNotFoundError) for e in chain):
            return (f"no socket at {socket_path}; mount it into this container "
                    f"(-v /var/run/docker.sock:{socket_path}) or set DOCKER_HOST or docker.host")
        if any(isinstance(e, PermissionError) for e in chain):
            return (f"permission denied on {socket_path}; run with the socket's group "
                    f"(--group-add $(stat -c %g {socket_path})) or use a socket proxy")
    failure = classify(exc)
    if failure.phase in ("connect", "dns", "tls", "read"):
        return f"{failure.reason}; check DOCKER_HOST or docker.host, and that the engine listens there"
    return str(exc)
