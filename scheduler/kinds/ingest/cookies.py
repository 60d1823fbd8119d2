"""Cookies a source sets, sent back on the fetcher's later requests (as a requests ``Session`` did).

The standard library's :class:`http.cookiejar.CookieJar` decides what is stored and where it
goes (domain, path, ``Secure``, expiry); it speaks urllib's request and response interfaces, which
:class:`_Request` and :class:`_Response` provide for a URL and a urllib3 header map.

Invariants: a request that carries a ``Cookie`` header of its own keeps it as it is; with no
cookie stored, nothing is built per request (the fetcher's hot path stays as it is).
"""

from __future__ import annotations

import http.cookiejar
import urllib.request
from collections.abc import Mapping

from urllib3 import HTTPHeaderDict


class _Response:
    """What :meth:`CookieJar.extract_cookies` reads of a response: its ``Set-Cookie`` headers."""

    def __init__(self, headers: HTTPHeaderDict) -> None:
        self._headers = headers

    def info(self) -> _Response:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._headers.getlist(name) or default


class Cookies:
    """The cookies of one fetcher (not thread safe: one fetch thread uses it)."""

    def __init__(self) -> None:
        self._jar = http.cookiejar.CookieJar()
        self._set = False  # a response has set a cookie (counting the jar's cookies costs a walk)

    def store(self, url: str, headers: HTTPHeaderDict) -> None:
        """Keep the cookies the response to ``url`` set."""
        if "set-cookie" in headers:
            self._jar.extract_cookies(_Response(headers), urllib.request.Request(url))  # type: ignore[arg-type]
            self._set = True

    def add(self, url: str, headers: Mapping[str, str]) -> Mapping[str, str]:
        """``headers`` with the ``Cookie`` header the stored cookies make for ``url``, if any."""
        if not self._set or any(name.lower() == "cookie" for name in headers):
            return headers
        request = urllib.request.Request(url)
        self._jar.add_cookie_header(request)
        cookie = request.get_header("Cookie")
        return {**headers, "Cookie": cookie} if cookie else headers
