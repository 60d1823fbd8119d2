"""Helpers for the operations tests: a real daemon process, the CLI, a local webhook receiver.

Everything listens on 127.0.0.1 only.  Waits poll with a bound and fail with what was seen;
nothing asserts on how long something took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from polling import wait_for

REPO = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def http(method: str, url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Daemon:
    """``python -m scheduler run`` in a subprocess, its output collected line by line."""

    def __init__(self, config: Path, data_dir: Path, cwd: Path) -> None:
        self.config, self.data_dir, self.cwd = config, data_dir, cwd
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run", "--config", str(self.config), "--data-dir", str(self.data_dir)],
            cwd=self.cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n" + "\n".join(self.lines[-30:]))
            found = self.events(name)
            return found[0] if found else None

        return wait_for(probe, timeout, f"log event {name!r}", retry_errors=True)

    @property
    def url(self) -> str:
        listen = self.wait_event("http endpoint listening")["listen"]
        return f"http://{listen}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode


def run_cli(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m scheduler ARGS --config workdir/scheduler.yaml --data-dir workdir/data``."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args, "--config", str(workdir / "scheduler.yaml"),
         "--data-dir", str(workdir / "data")],
        cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=timeout, check=False)


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                receiver.bodies.append({"path": self.path, **json.loads(data)})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def events(self, event: str, path: str | None = None) -> list[dict[str, Any]]:
        return [b for b in list(self.bodies) if b.get("event") == event and (path is None or b["path"] == path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
