"""Helpers for the web console tests: real daemon and ``scheduler web`` processes, a plain HTTP
client that keeps cookies and never follows redirects, and a PNG reader for screenshots.

Everything listens on 127.0.0.1 (port 0, read back from the process's log).  Waits poll with a
bound and fail with what was seen.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from polling import wait_for

REPO = Path(__file__).resolve().parents[2]
TOKEN = "web-console-token-7f3a91"
SECRET = "sekret-4c0ffee-marker"  # in env values, a URL password and an alert URL: never on a page
T = TypeVar("T")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(probe: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy (errors count as "not yet")."""
    return wait_for(probe, timeout, what, interval, retry_errors=True)


class Proc:
    """``python -m scheduler ARGS`` in a subprocess, its output collected line by line."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", *args, "--config", str(workdir / "scheduler.yaml"),
             "--data-dir", str(workdir / "data"), "--log-format", "json"],
            cwd=workdir, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                out.append(event)
        return out

    def wait_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args[0]} exited ({self.proc.returncode}):\n" + "\n".join(self.lines[-30:]))
            found = self.events(name)
            return found[0] if found else None

        return wait_until(probe, timeout, f"log event {name!r}")

    def url(self, event: str) -> str:
        return "http://" + self.wait_event(event)["listen"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        return self.proc.returncode


def run_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args, "--config", str(workdir / "scheduler.yaml"),
                           "--data-dir", str(workdir / "data")],
                          cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=120, check=False)


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]*)"', self.text)
        assert match, "no CSRF field on the page"
        return match.group(1)


class Client:
    """A cookie-keeping HTTP client for one site; never follows redirects."""

    def __init__(self, base: str) -> None:
        split = urlsplit(base)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self.prefix = split.path.rstrip("/")
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None, cookies: bool = True) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        send = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form).encode()
            send.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if cookies and self.cookies:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, self.prefix + path, body=body, headers=send)
            response = conn.getresponse()
            reply = Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()
        for value in reply.all("Set-Cookie"):
            name, _, rest = value.partition("=")
            cookie_value = rest.split(";")[0]
            if "Max-Age=0" in value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = cookie_value
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], **kw: Any) -> Reply:
        return self.request("POST", path, form=form, **kw)

    def login(self, token: str = TOKEN) -> Reply:
        return self.post("/login", {"token": token, "next": "/"})


def png_colours(path: Path, limit: int = 10_000) -> int:
    """How many distinct colours an 8-bit RGB(A) non-interlaced PNG holds (counting stops at
    ``limit``); raises on anything else, so a broken file fails the test."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 4 == 0:  # every fourth row is plenty to tell a page from a blank one
            for x in range(0, stride, bpp * 2):
                colours.add(bytes(line[x:x + 3]))
            if len(colours) >= limit:
                return len(colours)
        previous = line
    return len(colours)
