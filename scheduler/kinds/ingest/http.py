"""HTTP for ingest: one requests ``Session`` with urllib3 ``Retry``, a rate limit, a deadline, redaction.

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
- No request starts sooner than ``1 / rate_limit`` seconds after the previous one, retries included.
- Nothing waits past the deadline: a retry sleep that would cross it fails at once, read timeouts
  shrink to the time left, and a body that trickles in is abandoned when the deadline passes.
- Secret values (and their URL-quoted and base64 forms) never appear in log records of this
  module or urllib3, nor in the text or the chained context of the errors raised here: every
  such text passes the one :class:`~scheduler.redaction.Redactor`.  Secrets are the ``auth:``
  credentials and every ``source.headers`` value except those of a few well-known harmless
  headers (:data:`PLAIN_HEADERS`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from scheduler.errors import JobFailed
from scheduler.kinds.ingest.spec_source import ApiKeyAuth, BasicAuth, BearerAuth, Source
from scheduler.neterrors import ConnectBudget, Failure, classify, endpoint, target
from scheduler.redaction import PLAIN_HEADERS, Redactor

_URLLIB3_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.response")
_CHUNK = 256 * 1024
# orjson reads an integer of 2**64 or more as a lossy float where the standard library keeps an
# exact int; any run of 19+ digits (2**63 has 19) sends the body to the standard library instead.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19


def parse_json(body: bytes) -> Any:
    """``json.loads(body)``, the same values and errors, about twice as fast for ordinary bodies.

    orjson parses what it can represent exactly; bodies it rejects (NaN, a BOM, UTF-16, lone
    surrogates, ...) or that hold long digit runs go to the standard library, whose result or error
    is the answer.
    """
    if _LONG_DIGIT_RUN not in body.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


class FetchError(JobFailed):
    """The source could not deliver a page; the message is redacted and safe to record."""


class DeadlineExceeded(FetchError):
    """The overall fetch deadline passed."""


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


class RateLimiter:
    """Spaces request starts at least ``1 / per_second`` apart (thread safe)."""

    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, deadline: float) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            if start > deadline:
                raise DeadlineExceeded("deadline reached while waiting for the rate limit")
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


OnRetry = Callable[[str | BaseException, int, int, float], None]  # (reason, next attempt, attempts at most, wait)


class _Retry(Retry):
    """urllib3 ``Retry`` that also respects the run deadline and the rate limit between attempts,
    and reports each retry (``on_retry``) before waiting for it."""

    deadline: float = float("inf")
    limiter: RateLimiter | None = None
    on_retry: OnRetry | None = None
    attempts: int = 1  # the most attempts one request may make (``total`` + 1)

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)
        retry.deadline, retry.limiter, retry.on_retry, retry.attempts = (
            self.deadline, self.limiter, self.on_retry, self.attempts)
        return retry

    def sleep(self, response: Any = None) -> None:
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response) or None
        if wait is None:
            wait = self.get_backoff_time()  # jitter drawn once: the wait logged is the wait slept
        if time.monotonic() + wait > self.deadline:
            raise DeadlineExceeded(f"deadline reached: the next retry would wait {wait:.1f}s")
        if self.on_retry is not None and self.history:
            last = self.history[-1]
            reason: str | BaseException = f"HTTP {last.status}" if last.status else last.error or "retry"
            self.on_retry(reason, len(self.history) + 1, self.attempts, wait)
        if wait > 0:
            time.sleep(wait)
        if self.limiter is not None:
            self.limiter.acquire(self.deadline)


class _Adapter(HTTPAdapter):
    def __init__(self, limiter: RateLimiter, retry: _Retry) -> None:
        self._limiter = limiter
        super().__init__(max_retries=retry, pool_connections=1, pool_maxsize=2)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self._limiter.acquire(self.max_retries.deadline)  # type: ignore[attr-defined]
        return super().send(request, **kwargs)


@dataclass(frozen=True)
class Page:
    """One fetched page: parsed JSON ``body``, response ``headers``, final ``url`` (unredacted)."""

    url: str
    status: int
    headers: Mapping[str, str]
    links: Mapping[str, Mapping[str, str]]
    body: Any
    nbytes: int


class Fetcher:
    """Fetches pages of one source until :meth:`close`; the deadline starts at construction."""

    def __init__(self, source: Source, redact: Redactor, log: Any, deadline: float | None = None) -> None:
        self.source, self.redact, self.log = source, redact, log
        self.deadline = deadline if deadline is not None else time.monotonic() + source.deadline.total_seconds()
        self.requests = 0
        policy = source.retries
        # connect=0: urllib3 hands connection failures straight back; :class:`ConnectBudget` paces them
        self._retry = _Retry(
            total=policy.total, connect=0, read=policy.total, status=policy.total, other=0,
            redirect=5, allowed_methods=frozenset({"GET"}), status_forcelist=frozenset(policy.statuses),
            backoff_factor=policy.backoff.total_seconds(), backoff_max=policy.backoff_max.total_seconds(),
            backoff_jitter=policy.jitter.total_seconds(),
            # typed int by urllib3, which only compares it: a fractional cap stays as configured
            retry_after_max=policy.retry_after_max.total_seconds(),  # type: ignore[arg-type]
            respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=True,
        )
        self._retry.deadline = self.deadline
        self._retry.limiter = RateLimiter(source.rate_limit)
        self._retry.on_retry = self._log_retry
        self._retry.attempts = policy.total + 1
        self._endpoint = ""  # host/path of the request in flight, for retry lines (no query: keys live there)
        self.session = requests.Session()
        self.session.verify = source.verify_tls
        self.session.trust_env = False  # no proxy or .netrc surprises: the spec says where to go
        adapter = _Adapter(self._retry.limiter, self._retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._headers, self._auth_params = self._auth_headers(source)
        self._filter = _RedactFilter(redact)
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).addFilter(self._filter)

    @staticmethod
    def _auth_headers(source: Source) -> tuple[dict[str, str], dict[str, str]]:
        auth = source.auth
        headers: dict[str, str] = {"Accept": "application/json"}
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
        self.session.close()
        for name in _URLLIB3_LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _budget(self) -> ConnectBudget:
        policy = self.source.retries
        return ConnectBudget(policy.connect_budget.total_seconds(), policy.backoff.total_seconds(),
                             policy.backoff_max.total_seconds(), policy.jitter.total_seconds())

    def _failure(self, exc: BaseException) -> Failure:
        return classify(exc, self.source.connect_timeout.total_seconds(), self.source.read_timeout.total_seconds())

    def get(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> Page:
        """GET one page and parse it as JSON; raises :class:`FetchError` (redacted, no chained context)."""
        return self.parsed(self.fetch(url, params, headers))

    def parsed(self, page: Page) -> Page:
        """``page`` (as :meth:`fetch` returns it) with its body parsed as JSON, or :class:`FetchError`."""
        try:
            body = parse_json(page.body)
        except ValueError as exc:
            raise FetchError(self.redact(f"invalid JSON from {page.url} ({page.nbytes} bytes): {exc}")) from None
        return dataclasses.replace(page, body=body)

    def fetch(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> Page:
        """GET one page; its ``body`` is the response's bytes.  Raises :class:`FetchError` (redacted,
        no chained context)."""
        error: str | None = None
        error_type: type[FetchError] = FetchError
        try:
            return self._get(url, params, headers)
        except DeadlineExceeded as exc:
            error, error_type = str(exc), DeadlineExceeded
        except FetchError as exc:
            error, error_type = str(exc), type(exc)
        except (requests.RequestException, Urllib3Error, OSError) as exc:
            error = f"GET {endpoint(url)} failed: {self._failure(exc).reason}"
        # raised outside the except blocks so the unredacted original is not chained as __context__
        raise error_type(self.redact(error))

    def _get(self, url: str, params: Mapping[str, str] | None, headers: Mapping[str, str]) -> Page:
        if params is not None:
            merged_params: dict[str, str] | None = {**params, **self._auth_params}
        else:  # a next URL carries its own query; add the API key unless the server echoed it
            query = urlsplit(url).query
            merged_params = {k: v for k, v in self._auth_params.items() if f"{quote_plus(k)}=" not in query} or None
        retry: Retry = self._retry
        self._endpoint = endpoint(url)
        budget = self._budget()
        while True:
            left = self.remaining()
            if left <= 0:
                raise DeadlineExceeded(f"deadline of {self.source.deadline} reached before fetching {self._endpoint}")
            timeout = (min(self.source.connect_timeout.total_seconds(), left),
                       min(self.source.read_timeout.total_seconds(), left))
            self.requests += 1
            try:
                resp = self.session.get(url, params=merged_params, headers={**self._headers, **headers}, stream=True,
                                        timeout=timeout)
            except requests.exceptions.RetryError:
                raise FetchError(f"GET {self._endpoint} failed: too many redirects or retries") from None
            except requests.exceptions.ConnectionError as exc:  # connect, DNS, TLS, reads after urllib3's retries
                failure = self._failure(exc)
                if not failure.before_request:
                    what = "after retries" if failure.phase == "read" and self.source.retries.total else ""
                    failed = f"GET {self._endpoint} failed: {failure.reason}"
                    raise FetchError(" ".join(filter(None, [failed, what]))) from None
                wait = budget.next_wait(failure)
                if wait is None:
                    attempts = "1 attempt" if budget.made == 1 else f"{budget.made} attempts"
                    raise FetchError(f"cannot connect to {target(url)}: {failure.reason} "
                                     f"({attempts} in {budget.elapsed():.1f}s)") from None
                if time.monotonic() + wait > self.deadline:
                    raise DeadlineExceeded(
                        f"deadline reached: cannot connect to {target(url)}: {failure.reason}") from None
                self._log_retry(failure.reason, budget.made + 1, budget.planned(failure), wait)
                time.sleep(wait)
                continue
            except requests.exceptions.RequestException as exc:  # a read timeout raised without retries
                raise FetchError(f"GET {self._endpoint} failed: {self._failure(exc).reason}") from None
            try:
                if resp.status_code >= 400:
                    snippet = self._read(resp, limit=500).decode("utf-8", "replace")
                    retried = resp.status_code in self.source.retries.statuses
                    what = f"after {self.source.retries.total} retries" if retried else "(not retried)"
                    body_line = " ".join(snippet.split())[:300]  # one line, whatever the server sent
                    raise FetchError(f"HTTP {resp.status_code} from {resp.url} {what}: {body_line}")
                try:
                    body = self._read(resp)
                except (requests.RequestException, Urllib3Error, OSError) as exc:
                    try:
                        retry = retry.increment(method="GET", url=url, error=exc)
                    except MaxRetryError:
                        raise FetchError(f"reading the body of {self._endpoint} failed after retries: "
                                         f"{self._failure(exc).reason}") from None
                    retry.sleep()  # logs the retry line
                    continue
            finally:
                resp.close()
            return Page(url=resp.url, status=resp.status_code, headers=dict(resp.headers), links=resp.links,
                        body=body, nbytes=len(body))

    def _read(self, resp: requests.Response, limit: int | None = None) -> bytes:
        """Read the body chunk by chunk so the deadline can end a trickling response."""
        chunks: list[bytes] = []
        size = 0
        raw = resp.raw
        while limit is None or size < limit:
            if time.monotonic() > self.deadline:
                raise DeadlineExceeded(f"deadline of {self.source.deadline} reached while reading {resp.url}")
            chunk = raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
