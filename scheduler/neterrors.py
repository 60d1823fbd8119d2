"""Transport failures: what went wrong talking to a server, in one short line, and how long a
failed connection is worth retrying (:class:`ConnectBudget`).

requests and urllib3 wrap the socket error several layers deep (``ConnectionError`` around
``MaxRetryError`` around ``NewConnectionError`` around ``ConnectionRefusedError``), and their
``str()`` is a long repr that names the pool, repeats the URL with its query (where an API key may
sit) and says "Max retries exceeded" even when nothing was retried.  :func:`classify` digs out the
cause and names it the way an operator would (``connection refused``, ``name does not resolve``).

Invariants:
- :attr:`Failure.reason` is one line, never contains a URL, a query string or a repr;
- ``phase`` is ``"connect"`` only when no byte reached the server (safe to retry any request) and
  ``"tls"`` for handshake and certificate failures, which a retry does not fix.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3 import exceptions as u3

from scheduler.retry import Backoff

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Failure:
    """A classified transport error: ``phase`` is ``connect``, ``dns``, ``tls``, ``read`` or ``other``."""

    phase: str
    reason: str

    @property
    def before_request(self) -> bool:
        """True when the request never reached the server: retrying cannot repeat any effect."""
        return self.phase in ("connect", "dns")


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (cause, context, urllib3 ``reason``, exception args), once each."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        yield item
        todo += [getattr(item, "reason", None) if isinstance(getattr(item, "reason", None), BaseException) else None,
                 item.__cause__, item.__context__, *(a for a in item.args if isinstance(a, BaseException))]


def _strerror(error: OSError) -> str:
    text = error.strerror or str(error) or type(error).__name__
    return text[:1].lower() + text[1:]


def _requests_errors(*names: str) -> tuple[type[BaseException], ...]:
    """requests' exception classes of these names, or none while requests is not imported (then no
    error can be one of them): the ingest fetcher drives urllib3 alone and need not load requests."""
    module = sys.modules.get("requests.exceptions")
    return tuple(getattr(module, name) for name in names) if module is not None else ()


def classify(exc: BaseException, connect_timeout: float | None = None, read_timeout: float | None = None) -> Failure:
    """The phase and a short reason for a transport error raised by requests/urllib3 (or a socket)."""
    chain = list(causes(exc))

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    # the innermost plain socket error; requests' exceptions are OSErrors too, urllib3's are not
    os_error = next((e for e in reversed(chain) if isinstance(e, OSError)
                     and not isinstance(e, (*_requests_errors("RequestException"), TimeoutError, ssl.SSLError))),
                    None)
    connect_timed_out = find(u3.ConnectTimeoutError, *_requests_errors("ConnectTimeout")) is not None
    if find(socket.gaierror, u3.NameResolutionError):
        return Failure("dns", "name does not resolve")
    if (cert := find(ssl.SSLCertVerificationError)) is not None:
        detail = getattr(cert, "verify_message", None) or "certificate verify failed"
        return Failure("tls", f"TLS certificate not trusted: {detail}")
    if find(ssl.SSLError, u3.SSLError, *_requests_errors("SSLError")) is not None:
        inner = find(ssl.SSLError)
        detail = getattr(inner, "reason", None) or "handshake failed"
        return Failure("tls", f"TLS handshake failed: {str(detail).lower().replace('_', ' ')}")
    if find(u3.NewConnectionError) is not None and isinstance(os_error, OSError):
        return Failure("connect", _strerror(os_error))  # refused, network unreachable, no route to host
    if connect_timed_out:
        after = f" after {_seconds(connect_timeout)}" if connect_timeout else ""
        return Failure("connect", f"connect timed out{after}")
    if find(u3.ReadTimeoutError, *_requests_errors("ReadTimeout"), TimeoutError) is not None:
        after = f" within {_seconds(read_timeout)}" if read_timeout else ""
        return Failure("read", f"no response{after} (read timeout)")
    if isinstance(os_error, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return Failure("read", f"connection broken: {_strerror(os_error)}")
    if find(u3.ProtocolError, u3.IncompleteRead, *_requests_errors("ChunkedEncodingError")) is not None:
        return Failure("read", "connection closed before the response was complete")
    if isinstance(os_error, OSError):
        return Failure("other", _strerror(os_error))
    return Failure("other", type(exc).__name__)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def target(url: str) -> str:
    """``host:port`` of ``url`` (default port by scheme): what a connect error is about."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{parts.hostname}:{port}"


def endpoint(url: str) -> str:
    """``host[:port]/path`` of ``url`` without query or credentials: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return host + (parts.path or "/")


class ConnectBudget:
    """When to retry a request whose connection failed, and for how long.

    Waits follow :class:`~scheduler.retry.Backoff` (``backoff``, doubling, at most
    ``backoff_max``, plus up to ``jitter``).  The plan, :attr:`attempts`, is as many attempts as
    fit when the waits alone (without jitter) add up to at most ``budget``; a name that does not
    resolve gets two at most (a resolver hiccup, not an outage).  A retry also needs the budget not
    yet spent in wall time, measured from the first attempt (``started``, a ``time.monotonic()``
    reading; now by default): slow failures (connect timeouts) end the plan early.
    """

    def __init__(self, budget: float, backoff: float, backoff_max: float, jitter: float,
                 started: float | None = None) -> None:
        self.budget, self.backoff, self.backoff_max, self.jitter = budget, backoff, backoff_max, jitter
        self._backoff = Backoff(backoff, backoff_max, jitter=jitter)
        self.waits: list[float] = []
        total = 0.0
        while len(self.waits) < 100:
            wait = self._backoff.base(len(self.waits) + 1)
            if total + wait > budget + 1e-9:
                break
            total += wait
            self.waits.append(wait)
        self.attempts = len(self.waits) + 1
        self.made = 0
        self.started = time.monotonic() if started is None else started

    def planned(self, failure: Failure) -> int:
        """The most attempts this request makes for ``failure``."""
        return min(self.attempts, 2) if failure.phase == "dns" else self.attempts

    def next_wait(self, failure: Failure) -> float | None:
        """Count the failed attempt; the wait before the next one, or ``None`` to give up."""
        self.made += 1
        if self.made >= self.planned(failure):
            return None
        left = self.budget - self.elapsed()
        if left <= 0:
            return None
        return min(self._backoff.jittered(self.waits[self.made - 1]), left)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
