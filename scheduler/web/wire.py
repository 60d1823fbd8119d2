"""One HTTP request and its response as the web console sees them, apart from any server.

The daemon's operations endpoint and ``scheduler web`` both turn a
:class:`~http.server.BaseHTTPRequestHandler` request into a :class:`Request` (:func:`read_request`),
hand it to :class:`scheduler.web.app.WebApp` and write the :class:`Response` back
(:func:`write_response`), so the pages behave the same wherever they are served.

Every response carries the security headers (:data:`SECURITY_HEADERS`): a Content-Security-Policy
without inline script or style, ``nosniff``, no framing, no referrer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

MAX_FORM = 64 * 1024
MAX_COOKIE = 4096  # longer Cookie headers are ignored: a session cookie is ~60 bytes

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class Request:
    """A request with the base path already removed from ``path`` (``/`` at least)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    form: dict[str, list[str]] = field(default_factory=dict)
    client: str = ""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def cookie(self, name: str) -> str | None:
        raw = self.header("cookie")
        if not raw or len(raw) > MAX_COOKIE:  # http.cookies' parser is slow on long quoted values
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    @property
    def secure(self) -> bool:
        """Reached over HTTPS (as a reverse proxy in front says with ``X-Forwarded-Proto``)."""
        return (self.header("x-forwarded-proto") or "").split(",")[0].strip().lower() == "https"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values

    @classmethod
    def redirect(cls, location: str, cookies: list[str] | None = None) -> Response:
        return cls(303, b"", headers={"Location": location}, cookies=cookies or [])


def strip_base(path: str, base_path: str) -> str:
    """``path`` without the ``base_path`` prefix (when it has it): a reverse proxy may pass the
    prefix on or strip it, and both reach the same page."""
    if base_path and (path == base_path or path.startswith(base_path + "/")):
        path = path[len(base_path):]
    return path or "/"


def read_request(handler: BaseHTTPRequestHandler, base_path: str) -> Request:
    """Build a :class:`Request` from the handler's request line, headers and (form) body."""
    split = urlsplit(handler.path)
    headers = {k.lower(): v for k, v in handler.headers.items()}
    form: dict[str, list[str]] = {}
    if handler.command == "POST":
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = 0
        body = handler.rfile.read(length) if 0 < length <= MAX_FORM else b""
        if headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return Request(method=handler.command, path=strip_base(split.path, base_path),
                   query=parse_qs(split.query, keep_blank_values=True), headers=headers, form=form,
                   client=str(handler.client_address[0]))


def checked(response: Response) -> Response:
    """``response`` itself; ``ValueError`` if a header value holds a control or non-ASCII
    character (a bug: header values are never sent so, no header injection)."""
    for value in [*response.headers.values(), *response.cookies]:
        if not value.isascii() or any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError("refusing a header value with a control or non-ASCII character")
    return response


def write_response(handler: BaseHTTPRequestHandler, response: Response) -> None:
    handler.send_response(response.status)
    handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(response.body)))
    for key, value in {**SECURITY_HEADERS, **response.headers}.items():
        handler.send_header(key, value)
    for cookie in response.cookies:
        handler.send_header("Set-Cookie", cookie)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(response.body)
