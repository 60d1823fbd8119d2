"""The operations endpoint: ``/healthz``, ``/metrics`` and, with an API token, ``/jobs``.

The server runs on threads of its own and never takes a lock the loop holds for long: health
reads ``daemon.last_tick`` (an attribute, atomic to read) and pings the state store on a helper
thread with a bounded wait; run requests go through ``daemon.request_run``, which is thread-safe
and leaves dispatching to the loop.

A heartbeat thread wakes the loop every ``stale_after / 3`` (when that is shorter than the loop's
idle tick), so a healthy but idle loop steps often enough to stay fresh; a loop stuck inside a
step cannot answer the wake-up, and health turns 503.

The API token is compared in constant time and never logged; the request log carries method,
path and status only.

Every other path is the web console (:mod:`scheduler.web`), imported on the first such request
(:meth:`OpsServer.web`), so a daemon whose pages nobody opens never loads Jinja2.  With
``http.base_path`` set, every route is also answered below that prefix.
"""

from __future__ import annotations

import hmac
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from scheduler import clock
from scheduler.daemon_view import IDLE_TICK
from scheduler.errors import ConfigError
from scheduler.httpserve import QuietHandler, threading_server
from scheduler.ops.metrics import OpsMetrics
from scheduler.redaction import redact_all

if TYPE_CHECKING:
    from scheduler.daemon_view import DaemonView
    from scheduler.web.app import WebApp

PING_TIMEOUT = 2.0
MAX_BODY = 64 * 1024


def requested_date(query: str, body: bytes) -> date | None:
    """The optional logical date of ``POST /jobs/NAME/run``: ``?date=YYYY-MM-DD`` or a JSON body
    ``{"date": "YYYY-MM-DD"}``.  Raises ``ValueError`` with the reason for a bad one."""
    values = parse_qs(query).get("date", [])
    if body.strip():
        try:
            payload = json.loads(body)
        except ValueError:
            raise ValueError("the body must be JSON, like {\"date\": \"2026-11-05\"}") from None
        if not isinstance(payload, dict) or set(payload) - {"date"}:
            raise ValueError("the body may only hold \"date\"")
        if payload.get("date") is not None:
            values.append(payload["date"])
    if not values:
        return None
    if len(set(map(str, values))) > 1:
        raise ValueError("two different dates given")
    try:
        return date.fromisoformat(str(values[0]))
    except ValueError:
        raise ValueError(f"date: expected YYYY-MM-DD, got {str(values[0])[:40]!r}") from None


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) into ``(host, port)``; port 0 picks a free one."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class HealthCheck:
    """Decides ``/healthz``: the loop ticked within ``stale_after`` and the store answers.

    At most one store ping is in flight; while it hangs, checks fail at once instead of piling up
    threads.
    """

    def __init__(self, daemon: DaemonView, stale_after: float, ping_timeout: float = PING_TIMEOUT) -> None:
        self.daemon = daemon
        self.stale_after = stale_after
        self.ping_timeout = ping_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-ping")
        self._pending: Future[bool] | None = None
        self._lock = threading.Lock()

    def check(self) -> tuple[bool, dict[str, Any]]:
        reasons: list[str] = []
        age = (clock.now() - self.daemon.last_tick).total_seconds()
        if age > self.stale_after:
            reasons.append(f"scheduling loop stalled: last tick {age:.1f}s ago (stale after {self.stale_after:g}s)")
        if self.daemon.stop_signals:
            reasons.append("shutting down")
        store_error = self._ping()
        if store_error:
            reasons.append(store_error)
        body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons,
                "last_tick": self.daemon.last_tick.isoformat(), "last_tick_age_seconds": round(age, 3),
                "running": self._running()}
        return not reasons, body

    def _running(self) -> int:
        return sum(1 for hs in list(self.daemon.active.values()) for h in list(hs) if not h.finished.is_set())

    def _ping(self) -> str | None:
        with self._lock:
            if self._pending is not None and not self._pending.done():
                return "state store not answering (previous check still waiting)"
            self._pending = future = self._executor.submit(self.daemon.store.ping)
        try:
            return None if future.result(timeout=self.ping_timeout) else "state store answered wrongly"
        except FutureTimeout:
            return f"state store not answering within {self.ping_timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - any store error makes us unhealthy
            return f"state store error: {type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class OpsServer:
    """The HTTP endpoint of one daemon.  :meth:`start` binds (raising ``ConfigError``) and serves."""

    def __init__(self, daemon: DaemonView, metrics: OpsMetrics) -> None:
        settings = daemon.config.http
        self.daemon = daemon
        self.metrics = metrics
        self.stale_after = settings.stale_after.total_seconds()
        self.health = HealthCheck(daemon, self.stale_after)
        self.listen = settings.listen or ""
        self.base_path = settings.base_path.rstrip("/")
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self.address: tuple[str, int] = ("", 0)
        self._web: WebApp | None = None
        self._web_lock = threading.Lock()

    def start(self) -> tuple[str, int]:
        host, port = parse_listen(self.listen)
        try:
            server = threading_server(host, port, _handler_for(self), "OpsHTTPServer")
        except OSError as exc:
            raise ConfigError(f"http.listen: cannot listen on {self.listen}: {exc.strerror or exc}") from None
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        self.address = (str(bound_host), bound_port)  # an IP address as text, for AF_INET and AF_INET6
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                         name="ops-http", daemon=True).start()
        beat = self.stale_after / 3
        if beat < IDLE_TICK.total_seconds():
            threading.Thread(target=self._heartbeat, args=(max(beat, 0.1),), name="ops-heartbeat",
                             daemon=True).start()
        self.daemon.log.info("http endpoint listening", listen=f"{self.address[0]}:{self.address[1]}",
                             api=self.token is not None)
        return self.address

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            self.daemon.wake()

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.health.close()

    # --- request handling (called on server threads) -------------------------------------------
    @property
    def token(self) -> str | None:
        """The API token in force: read per request, so a config reload's new token applies at
        once and the old one stops working."""
        return self.daemon.config.http.api_token or None

    def authorized(self, header: str | None) -> bool:
        token = self.token
        if token is None or not header:
            return False
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), token.encode())

    def web(self) -> WebApp:
        """The web console over this daemon's config and store, built on first use."""
        with self._web_lock:
            if self._web is None:
                from scheduler.web.app import WebApp
                from scheduler.web.views import Backend

                daemon = self.daemon

                def redact() -> Any:
                    redactor = daemon.redactor
                    if redactor is None:  # never serve a page unmasked
                        raise RuntimeError("the daemon has no masker; pages are not served")
                    return redactor.redact

                self._web = WebApp(Backend(config=lambda: daemon.config, store=daemon.store, redact=redact,
                                           served_by="daemon"), self.base_path)
            return self._web

    def serve_web(self, handler: BaseHTTPRequestHandler) -> None:
        from scheduler.web.server import serve

        serve(handler, self.web(), self.daemon.log)

    def redact(self, value: Any) -> Any:
        redactor = self.daemon.redactor
        return value if redactor is None else redact_all(value, redactor.redact)

    def jobs_body(self) -> dict[str, Any]:
        from scheduler.ops.status import job_summaries

        config = self.daemon.config
        jobs = job_summaries(config, self.daemon.store, upcoming=3)
        for job in jobs:
            handles = list(self.daemon.active.get(job["job"]) or ())
            job["running"] = sum(1 for h in handles if not h.finished.is_set())
        body: dict[str, Any] = self.redact({"jobs": jobs, "config_digest": config.digest})
        return body


def _handler_for(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _log(self, status: int) -> None:
            ops.daemon.log.debug("http request", method=self.command, path=urlsplit(self.path).path, status=status)

        def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._log(status)

        def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
            self._send(status, (json.dumps(payload, default=str) + "\n").encode(), "application/json", extra)

        def _route(self) -> tuple[str, list[str]]:
            path = urlsplit(self.path).path
            if ops.base_path and (path == ops.base_path or path.startswith(ops.base_path + "/")):
                path = path[len(ops.base_path):]
            path = path.rstrip("/") or "/"
            return path, [unquote(p) for p in path.strip("/").split("/")]

        def _api_allowed(self) -> bool:
            """Refuse unless a token is configured (404) and matches (401)."""
            if ops.token is None:
                self._json(404, {"error": "not found (the job API needs http.api_token)"})
                return False
            if not ops.authorized(self.headers.get("Authorization")):
                ops.daemon.log.warning("api request refused", path=urlsplit(self.path).path,
                                       client=self.client_address[0])
                self._json(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="scheduler"'})
                return False
            return True

        def do_GET(self) -> None:
            try:
                path, parts = self._route()
                if path == "/healthz":
                    healthy, body = ops.health.check()
                    self._json(200 if healthy else 503, body)
                elif path == "/metrics":
                    data, content_type = ops.metrics.render()
                    self._send(200, data, content_type)
                elif parts[0] == "jobs" and len(parts) == 1:
                    if self._api_allowed():
                        self._json(200, ops.jobs_body())
                elif parts[0] == "jobs" and len(parts) == 3 and parts[2] == "run":
                    self._json(405, {"error": "use POST"}, {"Allow": "POST"})
                else:
                    ops.serve_web(self)
            except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server thread
                ops.daemon.log.error("http request failed", path=urlsplit(self.path).path, error=str(exc))
                self._json(500, {"error": "internal error"})

        do_HEAD = do_GET

        def do_POST(self) -> None:
            try:
                _, parts = self._route()
                if not (len(parts) == 3 and parts[0] == "jobs" and parts[2] == "run"):
                    ops.serve_web(self)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
                if not self._api_allowed():
                    return
                job = parts[1]
                if job not in ops.daemon.config.jobs:
                    self._json(404, {"error": f"unknown job '{job}'"})
                    return
                if ops.daemon.stop_signals:
                    self._json(503, {"error": "scheduler is shutting down"})
                    return
                try:
                    day = requested_date(urlsplit(self.path).query, body)
                except ValueError as exc:
                    self._json(400, {"error": str(exc)})
                    return
                request = ops.daemon.request_run(job, trigger="api", day=day)
                ops.daemon.log.info("run requested", job=job, via="api", client=self.client_address[0],
                                    logical_date=day.isoformat() if day else None)
                self._json(202, {"job": job, "slot": request.slot.isoformat(), "trigger": request.trigger,
                                 "logical_date": day.isoformat() if day else None, "status": "queued"})
            except Exception as exc:  # noqa: BLE001 - see do_GET
                ops.daemon.log.error("http request failed", path=urlsplit(self.path).path, error=str(exc))
                self._json(500, {"error": "internal error"})

    return Handler
