"""Who may see and change what: the API token, browser sessions, CSRF tokens and origins.

* The only credential is ``http.api_token``.  Scripts send ``Authorization: Bearer TOKEN``; a
  browser posts it once to the login form and gets a session cookie.  Tokens are compared with
  :func:`hmac.compare_digest`.
* The cookie holds a random session id (32 bytes from :mod:`secrets`), never the token.  Sessions
  live in this process's memory (:class:`Sessions`), keyed by the SHA-256 of the id, so a restart
  or a logout ends them.  A session is bound to the token it was opened with: when a config
  reload changes the token, every session opened with the old one is refused.
* Each session has its own CSRF token (random, 32 bytes), put in a hidden field of every form and
  checked in constant time on every state-changing POST.  Such POSTs are also refused when the
  browser says they come from another origin (``Origin`` or ``Sec-Fetch-Site``).
* The cookie is ``HttpOnly``, ``SameSite=Lax`` (a link from an alert opens the page logged in;
  other sites' POSTs carry no cookie), scoped to the base path, and ``Secure`` behind HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from scheduler.web.wire import Request

COOKIE = "scheduler_session"
IDLE_LIMIT = 8 * 3600.0  # seconds a session lives without a request
ABSOLUTE_LIMIT = 24 * 3600.0  # seconds a session lives at most
MAX_SESSIONS = 512  # the oldest session goes when a new one would exceed this
LOGIN_FAILURES = 10  # wrong tokens from one client address within LOGIN_WINDOW before it must wait
LOGIN_WINDOW = 60.0


def token_matches(given: str, token: str | None) -> bool:
    """``given`` is the configured token (constant time; False when none is configured)."""
    if not token or not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def bearer(request: Request) -> str:
    """The token of an ``Authorization: Bearer`` header, or ``""``."""
    scheme, _, given = (request.header("authorization") or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Session:
    csrf: str
    token_digest: str  # SHA-256 of the token the session was opened with
    created: float
    seen: float


class Sessions:
    """Open browser sessions of one process (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> tuple[str, Session]:
        """A new session for a browser that proved it knows ``token``: ``(cookie value, session)``."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(csrf=secrets.token_urlsafe(32), token_digest=_digest(token), created=now, seen=now)
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions, key=lambda k: self._sessions[k].created)
                del self._sessions[oldest]
            self._sessions[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None, token: str | None) -> Session | None:
        """The live session of this cookie value, opened with the current ``token``, or None."""
        if not session_id or not token:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(_digest(session_id))
            if session is None:
                return None
            expired = now - session.seen > IDLE_LIMIT or now - session.created > ABSOLUTE_LIMIT
            if expired or not hmac.compare_digest(session.token_digest, _digest(token)):
                del self._sessions[_digest(session_id)]
                return None
            session.seen = now
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items()
                    if now - s.seen > IDLE_LIMIT or now - s.created > ABSOLUTE_LIMIT]:
            del self._sessions[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


MAX_TRACKED = 10_000  # client addresses the throttle remembers


class LoginThrottle:
    """Slows guessing: after :data:`LOGIN_FAILURES` wrong tokens (login form or Bearer header) from
    one client address within :data:`LOGIN_WINDOW` seconds, its logins and Bearer requests are
    refused until the window has passed (thread-safe).  Behind a reverse proxy every client has
    the proxy's address, so the proxy should limit login attempts itself."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            return len(recent) >= LOGIN_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.pop(client, [])  # re-inserted last: the dict is ordered by last failure
            if len(self._failures) >= MAX_TRACKED:
                # bounded: forget the addresses that failed longest ago, never the ones guessing now
                for stale in list(self._failures)[: MAX_TRACKED // 10]:
                    del self._failures[stale]
            times.append(self._clock())
            self._failures[client] = times


def csrf_ok(request: Request, session: Session) -> bool:
    """The form's ``csrf`` field is the session's token (constant time)."""
    given = request.field("csrf")
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site or origin.

    ``Sec-Fetch-Site: cross-site``/``same-site`` or an ``Origin`` whose host differs from the
    ``Host`` the request was sent to (or ``X-Forwarded-Host`` behind a proxy) is refused; a request
    without either header (curl, old browsers) passes to the CSRF token check.
    """
    fetch_site = (request.header("sec-fetch-site") or "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return False
    origin = request.header("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    host = (request.header("x-forwarded-host") or request.header("host") or "").split(",")[0].strip().lower()
    _, _, origin_host = origin.partition("://")
    return bool(host) and origin_host.rstrip("/").lower() == host


def session_cookie(value: str, base_path: str, secure: bool, max_age: int | None = None) -> str:
    """The ``Set-Cookie`` value for the session id (``max_age=0`` deletes it)."""
    parts = [f"{COOKIE}={value}", f"Path={base_path or '/'}", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
