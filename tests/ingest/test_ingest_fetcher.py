"""The fetcher on its own: raw bodies and parsed pages, content encodings, redirects, keep-alive,
header merging, TLS, and what it must not take from the environment.

Every server is real and listens on 127.0.0.1: :class:`Api` is an HTTP/1.1 server that keeps
connections open (as an API behind a load balancer does) and records what each request carried.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import ipaddress
import json
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from polling import wait_for

from scheduler.kinds.ingest.http import MAX_REDIRECTS, DeadlineExceeded, Fetcher, FetchError, source_redactor
from scheduler.kinds.ingest.spec_source import Source

KEY = "canary-K3Y-fetcher-9d41"
REPO = Path(__file__).resolve().parents[2]
Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    headers: list[tuple[str, str]]
    connection: int

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Api:
    """A keep-alive HTTP/1.1 server answering ``handler(path, request) -> (status, headers, body)``."""

    handler: Callable[[str, Seen], Reply]
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                api.connections += 1
                self.number = api.connections

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                request = Seen(self.path, list(self.headers.items()), self.number)
                api.seen.append(request)
                status, headers, body = api.handler(self.path, request)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Callable[..., Api]]:
    servers: list[Api] = []

    def start(handler: Callable[[str, Seen], Reply], tls: ssl.SSLContext | None = None) -> Api:
        servers.append(Api(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def fetcher(url: str, deadline: float | None = None, **source: Any) -> Fetcher:
    spec = Source.model_validate({"base_url": url, "retries": {"total": 1, "backoff": "0s", "jitter": "0s"},
                                  **source})
    return Fetcher(spec, source_redactor(spec), structlog.get_logger(), deadline=deadline)


def records(ids: list[int]) -> bytes:
    return json.dumps({"items": [{"id": i} for i in ids]}).encode()


def test_fetch_returns_the_body_as_sent_and_get_parses_it(api: Callable[..., Api]) -> None:
    body = b'{"items": [{"id": 1}, {"id": 2}], "note": "caf\xc3\xa9"}'
    server = api(lambda path, _: (200, {"Content-Type": "application/json", "X-Total": "2"}, body))
    with fetcher(server.url) as f:
        raw = f.fetch(server.url + "/items", {"page": "1"}, {})
        page = f.get(server.url + "/items", {"page": "2"}, {})
    assert raw.content == body and raw.nbytes == len(body) and raw.status == 200
    assert raw.url == server.url + "/items?page=1" and raw.headers["X-Total"] == "2"
    assert page.body == json.loads(body) and page.nbytes == len(body) and page.url.endswith("?page=2")
    assert [s.path for s in server.seen] == ["/items?page=1", "/items?page=2"]
    assert f.requests == 2


def test_invalid_json_names_the_url_and_size_without_the_key(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (200, {}, b"<html>maintenance</html>"))
    with fetcher(server.url, auth={"type": "api_key", "key": KEY, "in": "query", "name": "api_key"}) as f:
        assert f.fetch(server.url + "/items", {}, {}).content == b"<html>maintenance</html>"
        invalid = r"invalid JSON from http://\S+/items\?api_key=\*\*\* \(24 bytes\)"
        with pytest.raises(FetchError, match=invalid) as caught:
            f.get(server.url + "/items", {}, {})
    assert KEY not in str(caught.value) and caught.value.__context__ is None
    assert server.seen[0].path == f"/items?api_key={KEY}"


def test_the_query_api_key_goes_with_every_request_once(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (200, {}, b"[]"))
    with fetcher(server.url, auth={"type": "api_key", "key": KEY, "in": "query", "name": "api key"}) as f:
        f.fetch(server.url + "/items", {"page": "1"}, {})  # the first request: its params and the key
        f.fetch(server.url + "/items?cursor=b%2Fc#top", None, {})  # a next URL: its own query, the key added
        f.fetch(server.url + f"/items?cursor=d&api+key={KEY}", None, {})  # the server echoed the key: as is
    assert [s.path for s in server.seen] == [f"/items?page=1&api+key={KEY}", f"/items?cursor=b%2Fc&api+key={KEY}",
                                             f"/items?cursor=d&api+key={KEY}"]


def test_a_compressed_body_is_decoded(api: Callable[..., Api]) -> None:
    body = records(list(range(500)))

    def handler(path: str, request: Seen) -> Reply:
        [accepted] = request.values("Accept-Encoding")
        assert "gzip" in accepted
        return 200, {"Content-Encoding": "gzip"}, gzip.compress(body)

    server = api(handler)
    with fetcher(server.url) as f:
        page = f.get(server.url + "/items", None, {})
    assert page.body == json.loads(body) and page.nbytes == len(body)


def test_pages_share_one_kept_alive_connection(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (200, {}, records([1])))
    with fetcher(server.url) as f:
        for page in range(1, 6):
            f.get(server.url + "/items", {"page": str(page)}, {})
    assert len(server.seen) == 5 and {s.connection for s in server.seen} == {1}


def test_an_error_body_left_unread_does_not_leak_into_the_next_page(api: Callable[..., Api]) -> None:
    calls: list[str] = []

    def handler(path: str, _: Seen) -> Reply:
        calls.append(path)
        if len(calls) == 1:
            return 404, {}, b"x" * 100_000  # only the first 500 bytes are read for the error line
        return 200, {}, records([1])

    server = api(handler)
    with fetcher(server.url) as f:
        with pytest.raises(FetchError, match=r"^HTTP 404 from \S+ \(not retried\): x{300}$"):
            f.get(server.url + "/missing", None, {})
        assert f.get(server.url + "/items", None, {}).body == {"items": [{"id": 1}]}


def test_redirects_are_followed_and_the_last_url_is_the_page_url(api: Callable[..., Api]) -> None:
    def handler(path: str, _: Seen) -> Reply:
        if path.startswith("/old"):
            return 301, {"Location": "/moved?step=2"}, b"moved"
        if path.startswith("/moved"):
            return 307, {"Location": "/v2/items?step=3"}, b""
        return 200, {"Link": '</v2/items?cursor=abc>; rel="next"'}, records([4])

    server = api(handler)
    with fetcher(server.url) as f:
        page = f.get(server.url + "/old", {"page": "1"}, {})
    assert page.url == server.url + "/v2/items?step=3" and page.body == {"items": [{"id": 4}]}
    assert page.links["next"]["url"] == "/v2/items?cursor=abc"
    assert [s.path for s in server.seen] == ["/old?page=1", "/moved?step=2", "/v2/items?step=3"]
    assert f.requests == 1  # one page: the hops are part of its request


def test_a_redirect_loop_ends_after_the_limit(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (302, {"Location": "/again"}, b""))
    with fetcher(server.url) as f, pytest.raises(FetchError, match=rf"^GET \S+/again failed: more than "
                                                                   rf"{MAX_REDIRECTS} redirects$"):
        f.get(server.url + "/start", None, {})
    assert len(server.seen) == MAX_REDIRECTS + 1


def test_authorization_stays_with_its_origin(api: Callable[..., Api]) -> None:
    other = api(lambda path, _: (200, {}, records([2])))

    def handler(path: str, _: Seen) -> Reply:
        if path == "/here":
            return 302, {"Location": "/there"}, b""
        if path == "/there":
            return 200, {}, records([1])
        return 302, {"Location": other.url + "/elsewhere"}, b""

    server = api(handler)
    with fetcher(server.url, auth={"type": "bearer", "token": KEY}) as f:
        f.get(server.url + "/here", None, {"X-Tenant": "acme"})
        f.get(server.url + "/away", None, {"X-Tenant": "acme"})
    with fetcher(server.url) as f:  # a credential in source.headers, its name in lower case
        f.get(server.url + "/away", None, {"authorization": f"Token {KEY}"})
    assert [s.values("Authorization") for s in server.seen] == [[f"Bearer {KEY}"]] * 3 + [[f"Token {KEY}"]]
    assert [(s.values("Authorization"), s.values("X-Tenant")) for s in other.seen] == [([], ["acme"]), ([], [])]


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (401, {}, b"who are you"))
    password = "pw@" + KEY
    url = server.url.replace("://", f"://svc:{password.replace('@', '%40')}@")
    with fetcher(url) as f, pytest.raises(FetchError, match=r"^HTTP 401 from http://svc:\*\*\*@127") as caught:
        f.get(url + "/items", None, {"Authorization": "Bearer other"})
    assert KEY not in str(caught.value)
    basic = base64.b64encode(f"svc:{password}".encode()).decode()
    assert [s.values("Authorization") for s in server.seen] == [[f"Basic {basic}"]]


def test_cookies_the_source_sets_are_sent_back(api: Callable[..., Api]) -> None:
    def handler(path: str, _: Seen) -> Reply:
        if path == "/login":  # a redirect that sets a cookie: the next hop carries it already
            return 302, {"Set-Cookie": "node=b7; Path=/", "Location": "/items"}, b""
        return 200, {"Set-Cookie": "page=2; Path=/items"}, b"[]"

    server = api(handler)
    with fetcher(server.url) as f:
        f.get(server.url + "/login", None, {})
        f.get(server.url + "/items", None, {})
        f.get(server.url + "/other", None, {})  # outside the second cookie's path
        f.get(server.url + "/items", None, {"cookie": "mine=1"})  # a Cookie header of the spec's own wins
    assert [(s.path, s.values("Cookie")) for s in server.seen] == [
        ("/login", []), ("/items", ["node=b7"]), ("/items", ["page=2; node=b7"]), ("/other", ["node=b7"]),
        ("/items", ["mine=1"])]
    with fetcher(server.url) as f:  # cookies live as long as their fetcher: one run
        f.get(server.url + "/other", None, {})
    assert server.seen[-1].values("Cookie") == []


def test_spec_headers_replace_defaults_whatever_their_case(api: Callable[..., Api]) -> None:
    server = api(lambda path, _: (200, {}, b"[]"))
    headers = {"accept": "application/vnd.api+json", "User-Agent": "sales-ingest/1.0", "ACCEPT-ENCODING": "identity"}
    with fetcher(server.url, headers=headers) as f:
        f.get(server.url + "/items", None, headers)  # the run templates source.headers and passes them
    [seen] = server.seen
    assert seen.values("Accept") == ["application/vnd.api+json"]
    assert seen.values("Accept-Encoding") == ["identity"] and seen.values("User-Agent") == ["sales-ingest/1.0"]


def test_proxy_netrc_and_ca_settings_of_the_environment_are_ignored(
    api: Callable[..., Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = api(lambda path, _: (200, {}, records([1])))
    proxy = api(lambda path, _: (502, {}, b"a proxy was used"))  # answers anything sent its way
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login svc password {KEY}\n")
    netrc.chmod(0o600)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    with fetcher(server.url) as f:
        assert f.get(server.url + "/items", None, {}).body == {"items": [{"id": 1}]}
    [seen] = server.seen
    assert seen.path == "/items" and seen.values("Authorization") == [] and proxy.seen == []


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (no CA anyone trusts) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "cert.pem", directory / "key.pem"


def test_tls_verification_follows_verify_tls_only(api: Callable[..., Api], self_signed: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server = api(lambda path, _: (200, {}, records([1])), tls=context)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(self_signed[0]))  # would make it trusted, were the environment read
    with fetcher(server.url) as f, pytest.raises(FetchError, match=r"^GET 127\.0\.0\.1:\d+/items failed: TLS "
                                                                   r"certificate not trusted"):
        f.get(server.url + "/items", None, {})
    assert server.seen == []
    with pytest.warns(Warning, match="Unverified HTTPS request"), fetcher(server.url, verify_tls=False) as f:
        assert f.get(server.url + "/items", None, {}).body == {"items": [{"id": 1}]}


def test_a_body_without_length_trickling_past_the_deadline_is_abandoned(raw_server: Callable[..., Any]) -> None:
    finished = threading.Event()

    def trickle(conn: Any, _: bytes) -> None:  # no Content-Length: the body ends when the connection does
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[")
        try:
            for _ in range(40):
                conn.sendall(b"1,")
                time.sleep(0.25)  # the server's pace: each read is well inside the read timeout
        finally:
            finished.set()

    server = raw_server(trickle)
    with fetcher(server.url, deadline=time.monotonic() + 1.0, read_timeout="5s") as f, \
            pytest.raises(DeadlineExceeded, match=r"deadline of .* reached while reading http://\S+/items"):
        f.fetch(server.url + "/items", None, {})
    assert not finished.is_set()  # abandoned mid-body, not read to its end and then refused


def test_fetching_loads_urllib3_but_not_requests() -> None:
    code = textwrap.dedent("""
        import socket, sys, structlog
        from scheduler.kinds.ingest.http import Fetcher, FetchError, source_redactor
        from scheduler.kinds.ingest.spec_source import Source
        from scheduler.sample.api import start_server

        server, url = start_server(records_per_day=10, per_page=5)
        source = Source.model_validate({"base_url": url, "retries": {"total": 0, "connect_budget": "0s"}})
        with Fetcher(source, source_redactor(source), structlog.get_logger()) as f:
            assert len(f.get(url + "/v1/sales", {"date": "2026-11-05"}, {}).body["data"]) == 5
            held = socket.socket()
            held.bind(("127.0.0.1", 0))  # bound, not listening: refused, and the error classified
            try:
                f.get(f"http://127.0.0.1:{held.getsockname()[1]}/", None, {})
            except FetchError as exc:
                assert "connection refused" in str(exc), exc
        server.shutdown()
        print(sorted(m for m in ("requests", "urllib3") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['urllib3']"


def test_close_ends_the_retries_of_a_source_that_is_down() -> None:
    """A run that fails elsewhere closes its fetcher: the fetch thread stops retrying at once."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: every connect is refused
    f = fetcher(f"http://127.0.0.1:{port}", retries={"connect_budget": "600s", "backoff": "120s",
                                                                     "backoff_max": "120s"})
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            f.fetch(f"http://127.0.0.1:{port}/x", {}, {})
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    wait_for(lambda: f.requests >= 1, what="the first attempt")  # refused at once, then a 120 s retry wait
    f.close()
    thread.join(60)  # far inside the retry wait: only the close can have ended it
    assert not thread.is_alive()
    assert isinstance(outcome[0], FetchError) and "closed" in str(outcome[0])
