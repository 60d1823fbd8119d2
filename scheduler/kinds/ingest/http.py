"""HTTP for ingest: urllib3 driven directly, with its ``Retry``, a rate limit, a deadline, redaction.

Invariants:
- 429, the configured 5xx and read errors are retried by urllib3's ``Retry`` with exponential
  backoff and jitter, honouring ``Retry-After`` (seconds or HTTP date) up to ``retry_after_max``;
  other 4xx fail at once.  Errors while reading a body are retried with the same ``Retry`` state.
- Connection failures (refused, unreachable, connect timeout) are retried here, not by urllib3,
  on a short budget of their own (:class:`ConnectBudget`): a source that is down fails the run in
  seconds, not after ``retries.total`` long backoffs.  A name that does not resolve is retried
  once; TLS failures are not retried.
- Every retry logs one line: ``retrying GET host/path: REASON (attempt N/M, next in Ws)``, and a
  transport failure ends in one :class:`FetchError` line such as ``cannot connect to
  host:443: name does not resolve (2 attempts in 1.0s)``; neither holds a query string.
- No request starts sooner than ``1 / rate_limit`` seconds after the previous one, retries and
  redirects included.
- Nothing waits past the deadline: a retry sleep that would cross it fails at once, read timeouts
  shrink to the time left, and a body that trickles in is abandoned when the deadline passes.
- Redirects (301, 302, 303, 307, 308 with a ``Location``) are followed, at most
  :data:`MAX_REDIRECTS` per page, each hop a request of its own; ``Authorization`` (whatever the
  case of its name) is not sent on to another origin; a page's ``url`` is the last one fetched.
- Cookies the source sets are sent back (:class:`~scheduler.kinds.ingest.cookies.Cookies`).
- Only the spec says where to go and how to sign in: no proxy, ``.netrc`` or CA bundle is taken
  from the environment; with ``verify_tls`` certificates are checked against certifi's bundle;
  ``user:password@`` in a URL is sent as basic auth.
- Secret values (and their URL-quoted and base64 forms) never appear in log records of this
  module or urllib3, nor in the text or the chained context of the errors raised here: every
  such text passes the one :class:`~scheduler.redaction.Redactor`.  Secrets are the ``auth:``
  credentials and every ``source.headers`` value except those of a few well-known harmless
  headers (:data:`PLAIN_HEADERS`).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from http.client import HTTPException
from typing import Any
from urllib.parse import quote_plus, unquote, urlencode, urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.util import make_headers, parse_url
from urllib3.util.retry import Retry

from scheduler.kinds.ingest.cookies import Cookies
from scheduler.kinds.ingest.pacing import DeadlineExceeded, FetchError, PacedRetry, RateLimiter, Watchdog
from scheduler.kinds.ingest.responses import Page, RawPage, header_links, parse_json
from scheduler.kinds.ingest.spec_source import ApiKeyAuth, BasicAuth, BearerAuth, Source
from scheduler.neterrors import DEFAULT_PORTS, ConnectBudget, Failure, classify, endpoint, target
from scheduler.redaction import PLAIN_HEADERS, Redactor

__all__ = ["DeadlineExceeded", "FetchError", "Fetcher", "Page", "RateLimiter", "RawPage", "parse_json",
           "source_redactor", "source_secrets"]

_URLLIB3_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                    "urllib3.util.retry", "urllib3.response")
MAX_REDIRECTS = 30
_ORIGINS = 8  # connection pools kept (one per scheme, host and port)
_ORIGIN_BOUND = frozenset({"authorization", "proxy-authorization", "cookie"})  # not sent on to another origin
_TRANSPORT_ERRORS = (Urllib3Error, OSError, HTTPException)


def source_secrets(source: Source) -> list[str]:
    """The secrets of ``source``: its ``auth:`` credentials (for basic auth also the encoded
    ``user:password`` the header carries) and every ``headers`` value but those of :data:`PLAIN_HEADERS`
    (with a scheme such as ``Token abc...``, the credential alone too: it may be echoed so)."""
    auth, secrets = source.auth, []
    if isinstance(auth, BearerAuth):
        secrets.append(auth.token)
    elif isinstance(auth, ApiKeyAuth):
        secrets.append(auth.key)
    elif isinstance(auth, BasicAuth):
        secrets += [auth.password, base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()]
    for name, value in source.headers.items():
        if name.lower() not in PLAIN_HEADERS:
            secrets.append(value)
            scheme, _, credential = value.strip().rpartition(" ")
            if scheme:
                secrets.append(credential)
    return secrets


def source_redactor(source: Source, extra: Iterable[str] = ()) -> Redactor:
    """The run's masker: the source's secrets (:func:`source_secrets`) and ``extra`` ones."""
    return Redactor([*source_secrets(source), *extra])


class _RedactFilter(logging.Filter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Retrying ("):
            return False  # urllib3's repr of the Retry state: the fetcher logs its own one-line retry
        record.msg, record.args = self._redact(record.getMessage()), ()
        return True


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)


def _keeps_authorization(old: str, new: str) -> bool:
    """Whether a redirect from ``old`` to ``new`` may carry ``Authorization`` on: the same origin,
    or the upgrade of an origin from http to https on the default ports."""
    before, after = _origin(old), _origin(new)
    return before == after or (before[1] == after[1] and before[0::2] == ("http", 80) and after[0::2] == ("https", 443))


def _merged(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """``base`` updated with ``extra``, header names compared without case (one value each)."""
    if not extra:
        return dict(base)
    names = {name.lower() for name in extra}
    return {**{k: v for k, v in base.items() if k.lower() not in names}, **extra}


def _with_userinfo(url: str, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with basic auth from ``user:password@`` in ``url``, when it has some (what
    requests did with such a URL: it replaces any other ``Authorization``)."""
    if "@" not in url:
        return headers
    parts = urlsplit(url)
    if parts.username is None:
        return headers
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return {**{k: v for k, v in headers.items() if k.lower() != "authorization"}, "Authorization": f"Basic {token}"}


class Fetcher:
    """Fetches pages of one source until :meth:`close`; the deadline starts at construction."""

    def __init__(self, source: Source, redact: Redactor, log: Any, deadline: float | None = None) -> None:
        self.source, self.redact, self.log = source, redact, log
        self.deadline = deadline if deadline is not None else time.monotonic() + source.deadline.total_seconds()
        self.requests = 0
        policy = source.retries
        # connect=0: urllib3 hands connection failures straight back; :class:`ConnectBudget` paces them.
        # redirect=False: urllib3 returns a redirect as it is; the fetcher follows it (see _fetch).
        self._retry = PacedRetry(
            total=policy.total, connect=0, read=policy.total, status=policy.total, other=0,
            redirect=False, allowed_methods=frozenset({"GET"}), status_forcelist=frozenset(policy.statuses),
            backoff_factor=policy.backoff.total_seconds(), backoff_max=policy.backoff_max.total_seconds(),
            backoff_jitter=policy.jitter.total_seconds(),
            # typed int by urllib3, which only compares it: a fractional cap stays as configured
            retry_after_max=policy.retry_after_max.total_seconds(),  # type: ignore[arg-type]
            respect_retry_after_header=True, raise_on_status=False,
        )
        self._limiter = RateLimiter(source.rate_limit)
        self._retry.deadline = self.deadline
        self._retry.limiter = self._limiter
        self._retry.on_retry = self._log_retry
        self._retry.attempts = policy.total + 1
        self._timeouts = (source.connect_timeout.total_seconds(), source.read_timeout.total_seconds())
        self._in_flight = ""  # URL of the request in flight (its query may hold a key: log only _endpoint)
        tls: dict[str, Any] = ({"cert_reqs": "CERT_REQUIRED", "ca_certs": certifi.where()} if source.verify_tls
                               else {"cert_reqs": "CERT_NONE"})
        self._pools = urllib3.PoolManager(num_pools=_ORIGINS, maxsize=2, **tls)
        self._by_origin: dict[tuple[str, str, int | None], urllib3.HTTPConnectionPool] = {}
        self._watchdog = Watchdog(self.deadline)
        self._closed = threading.Event()  # set by close(): no further request, no retry wait
        self._cookies = Cookies()
        self._headers, self._auth_params = self._auth_headers(source)
        self._filter = _RedactFilter(redact)
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)

    @staticmethod
    def _auth_headers(source: Source) -> tuple[dict[str, str], dict[str, str]]:
        auth = source.auth
        # what a requests Session sent, less its User-Agent (urllib3 names itself)
        encodings = make_headers(accept_encoding=True)["accept-encoding"]  # gzip, deflate (br, zstd if installed)
        headers = {"Accept": "application/json", "Accept-Encoding": encodings}
        params: dict[str, str] = {}
        if isinstance(auth, BearerAuth) and auth.token:
            headers["Authorization"] = f"Bearer {auth.token}"
        elif isinstance(auth, ApiKeyAuth):
            (headers if auth.in_ == "header" else params)[auth.name] = auth.key
        elif isinstance(auth, BasicAuth):
            token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers, params

    def close(self) -> None:
        self._closed.set()
        self._watchdog.cancel()
        self._by_origin.clear()
        self._pools.clear()
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _endpoint(self) -> str:
        """host/path of the request in flight, for retry lines and errors (no query: keys live there)."""
        return endpoint(self._in_flight)

    def _pool(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The connection pool for ``url``'s origin and the request target to send it."""
        parts = parse_url(url)  # also percent-encodes what may not travel as is (a space in a Location)
        if parts.scheme not in DEFAULT_PORTS or not parts.host:
            raise FetchError(f"not an http(s) URL: {url}")
        key = (parts.scheme, parts.host, parts.port)
        pool = self._by_origin.get(key)
        if pool is None:
            if len(self._by_origin) >= _ORIGINS:  # both forget them at once: no pool is closed behind our back
                self._by_origin.clear()
                self._pools.clear()
            pool = self._by_origin[key] = self._pools.connection_from_host(parts.host, parts.port, parts.scheme)
        return pool, parts.request_uri

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _log_retry(self, reason: str | BaseException, attempt: int, attempts: int, wait: float) -> None:
        if isinstance(reason, BaseException):
            reason = self._failure(reason).reason
        self.log.warning(self.redact(f"retrying GET {self._endpoint}: {reason} (attempt {attempt}/{attempts}, "
                                     f"next in {wait:.1f}s)"),
                         # not ``attempt``: that field is the run's attempt, bound to every line of it
                         url=self.redact(self._endpoint), reason=reason, request_attempt=attempt,
                         request_attempts=attempts, wait=round(wait, 3))

    def _budget(self, started: float) -> ConnectBudget:
        policy = self.source.retries
        return ConnectBudget(policy.connect_budget.total_seconds(), policy.backoff.total_seconds(),
                             policy.backoff_max.total_seconds(), policy.jitter.total_seconds(), started=started)

    def _failure(self, exc: BaseException) -> Failure:
        return classify(exc, *self._timeouts)

    def get(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> Page:
        """GET one page and parse it as JSON (:func:`parse_json`); raises :class:`FetchError`
        (redacted, no chained context), for a body that is not JSON too."""
        return self.parsed(self.fetch(url, params, headers))

    def parsed(self, raw: RawPage) -> Page:
        """``raw`` with its body parsed as JSON (:func:`parse_json`), or :class:`FetchError`
        (redacted, no chained context)."""
        try:
            return raw.page(parse_json(raw.content))
        except ValueError as exc:
            error = f"invalid JSON from {raw.url} ({raw.nbytes} bytes): {exc}"
        # raised outside the except block so the unredacted original is not chained as __context__
        raise FetchError(self.redact(error))

    def fetch(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> RawPage:
        """GET one page, its body unparsed; raises :class:`FetchError` (redacted, no chained context).

        ``params`` are added to ``url``'s query; ``None`` means ``url`` is a next URL the server
        gave, which keeps its own query (the API key is added unless the server echoed it)."""
        error: str | None = None
        error_type: type[FetchError] = FetchError
        try:
            return self._fetch(self._url(url, params), _with_userinfo(url, _merged(self._headers, headers)))
        except FetchError as exc:
            error, error_type = str(exc), type(exc)
        except (*_TRANSPORT_ERRORS, ValueError) as exc:  # ValueError: a URL urllib3 cannot parse
            error = f"GET {endpoint(url)} failed: {self._failure(exc).reason}"
        # raised outside the except blocks so the unredacted original is not chained as __context__
        raise error_type(self.redact(error))

    def _url(self, url: str, params: Mapping[str, str] | None) -> str:
        if params is not None:
            query = {**params, **self._auth_params}
        else:  # a next URL carries its own query; add the API key unless the server echoed it
            own = urlsplit(url).query
            query = {k: v for k, v in self._auth_params.items() if f"{quote_plus(k)}=" not in own}
        if not query:
            return url
        url = url.partition("#")[0]
        separator = "" if url.endswith(("?", "&")) else "&" if "?" in url else "?"
        return f"{url}{separator}{urlencode(query)}"

    def _fetch(self, url: str, headers: dict[str, str]) -> RawPage:
        retry: Retry = self._retry
        self._in_flight = url
        started = time.monotonic()
        budget: ConnectBudget | None = None
        redirects = 0
        hop = False  # the request follows a redirect: one more request of the same attempt
        while True:
            if self._closed.is_set():
                raise FetchError(f"GET {self._endpoint} stopped: the fetcher was closed")
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"deadline of {self.source.deadline} reached before fetching {self._endpoint}")
            if not hop:
                self.requests += 1
            hop = False
            self._limiter.acquire(self.deadline)
            try:
                pool, target_uri = self._pool(url)
                resp = pool.urlopen(
                    "GET", target_uri, headers=self._cookies.add(url, headers), retries=retry, redirect=False,
                    assert_same_host=False, preload_content=False,
                    timeout=urllib3.Timeout(connect=min(self._timeouts[0], left), read=min(self._timeouts[1], left)))
            except MaxRetryError as exc:  # connect, DNS, TLS, or reads and statuses after urllib3's retries
                failure = self._failure(exc)
                if not failure.before_request:
                    what = "after retries" if failure.phase == "read" and self.source.retries.total else ""
                    failed = f"GET {self._endpoint} failed: {failure.reason}"
                    raise FetchError(" ".join(filter(None, [failed, what]))) from None
                budget = budget or self._budget(started)
                wait = budget.next_wait(failure)
                if wait is None:
                    attempts = "1 attempt" if budget.made == 1 else f"{budget.made} attempts"
                    raise FetchError(f"cannot connect to {target(url)}: {failure.reason} "
                                     f"({attempts} in {budget.elapsed():.1f}s)") from None
                if time.monotonic() + wait > self.deadline:
                    raise DeadlineExceeded(
                        f"deadline reached: cannot connect to {target(url)}: {failure.reason}") from None
                self._log_retry(failure.reason, budget.made + 1, budget.planned(failure), wait)
                self._closed.wait(wait)  # a close() ends the wait; the loop then stops
                continue
            try:
                self._cookies.store(url, resp.headers)
                location = resp.get_redirect_location()
                if location:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise FetchError(f"GET {self._endpoint} failed: more than {MAX_REDIRECTS} redirects")
                    resp.drain_conn()
                    following = urljoin(url, location)
                    if not _keeps_authorization(url, following):
                        headers = {k: v for k, v in headers.items() if k.lower() not in _ORIGIN_BOUND}
                    url = self._in_flight = following
                    retry, hop = self._retry, True
                    continue
                if resp.status >= 400:
                    snippet = self._read(resp, url, limit=500).decode("utf-8", "replace")
                    retried = resp.status in self.source.retries.statuses
                    what = f"after {self.source.retries.total} retries" if retried else "(not retried)"
                    body_line = " ".join(snippet.split())[:300]  # one line, whatever the server sent
                    raise FetchError(f"HTTP {resp.status} from {url} {what}: {body_line}")
                try:
                    body = self._read(resp, url)
                except _TRANSPORT_ERRORS as exc:
                    try:
                        retry = retry.increment(method="GET", url=url, error=exc)
                    except MaxRetryError:
                        raise FetchError(f"reading the body of {self._endpoint} failed after retries: "
                                         f"{self._failure(exc).reason}") from None
                    retry.sleep()  # logs the retry line
                    continue
            finally:
                resp.close()  # a body read to its end has already handed the connection back
                resp.release_conn()
            return RawPage(url=url, status=resp.status, headers=dict(resp.headers),
                           links=header_links(resp.headers.get("link")), content=body, nbytes=len(body))

    def _read(self, resp: urllib3.BaseHTTPResponse, url: str, limit: int | None = None) -> bytes:
        """The body (its first ``limit`` bytes) in one read, which :class:`Watchdog` ends at the deadline."""
        self._watchdog.watch(resp)
        try:
            if self._watchdog.fired or time.monotonic() > self.deadline:
                raise DeadlineExceeded(f"deadline of {self.source.deadline} reached before reading {url}")
            body = resp.read(limit)
        except _TRANSPORT_ERRORS:
            if not self._watchdog.fired:
                raise
            body = b""
        finally:
            self._watchdog.watch(None)
        if self._watchdog.fired:
            raise DeadlineExceeded(f"deadline of {self.source.deadline} reached while reading {url}")
        return body
