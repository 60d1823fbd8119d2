"""Scheduler replicas as real processes for the HA tests: ``scheduler run`` children sharing one
PostgreSQL database, each with a data dir of its own (as separate hosts would have), a JSON log
file, and the HTTP endpoint on a port it picked itself (read back from its log)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from polling import wait_for

REPO = Path(__file__).resolve().parent.parent.parent
API_TOKEN = "ha-test-token"


def write_config(path: Path, jobs: str, lease_ttl: str = "3s") -> Path:
    """A config for replicas: the shared store (URL from ``$HA_PG_URL``), the endpoint with an API
    token, and ``jobs`` (YAML, indented under ``jobs:``)."""
    path.write_text(textwrap.dedent(f"""\
        state:
          backend: postgres
          url: ${{HA_PG_URL}}
          lease_ttl: {lease_ttl}
        daemon:
          shutdown_grace: 3s
        http:
          listen: 127.0.0.1:0
          api_token: {API_TOKEN}
          stale_after: 30s
        jobs:
        """) + textwrap.indent(textwrap.dedent(jobs), "  "), encoding="utf-8")
    return path


class Replica:
    """One ``scheduler run``; :meth:`start` it (again after a kill), :meth:`kill` or :meth:`stop` it."""

    def __init__(self, name: str, config: Path, root: Path, pg_url: str) -> None:
        self.name = name
        self.config = config
        self.data_dir = root / name
        self.root = root
        self.env = dict(os.environ, HA_PG_URL=pg_url,
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.env.pop("SCHEDULER_CONFIG", None)
        self.env.pop("SCHEDULER_DATA_DIR", None)
        self.lives = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.port = 0

    def start(self, wait: bool = True) -> Replica:
        self.lives += 1
        log = self.root / f"{self.name}-{self.lives}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "scheduler", "run", "--config", str(self.config),
                                          "--data-dir", str(self.data_dir), "--log-format", "json"],
                                         stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root)
        if wait:
            listening = wait_for(lambda: self._event("http endpoint listening"), 60, what=f"{self.name} listening")
            self.port = int(listening["listen"].rpartition(":")[2])
            wait_for(lambda: self.healthz()[0] == 200, 60, what=f"{self.name} healthy")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self, all_lives: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for log in self.logs if all_lives else self.logs[-1:]:
            for line in log.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
        return out

    def _event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events(all_lives=False) if e.get("event") == name), None)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except OSError as exc:
            return 0, {"error": str(exc)}

    def request_run(self, job: str) -> dict[str, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/jobs/{job}/run", method="POST",
                                         headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def kill(self) -> None:
        """SIGKILL: the replica dies without a word.  Its runs' children, each in a session of its
        own, live on as orphans; tests end them by the pids the jobs wrote (:func:`end_group_leaders`)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def out_lines(path: Path) -> list[list[str]]:
    """The lines the test jobs appended, split on blanks."""
    return [line.split() for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def counts(path: Path, kind: str = "start") -> Counter[tuple[str, str]]:
    """How many runs started per ``(job, slot)`` (lines ``start JOB SLOT ...``)."""
    return Counter((f[1], f[2]) for f in out_lines(path) if f and f[0] == kind)


def end_group_leaders(path: Path) -> None:
    """SIGKILL the process groups whose leader pids the jobs wrote (``pid=N``): runs of killed
    replicas live on as orphans; the test ends them."""
    for fields in out_lines(path):
        for field in fields:
            if field.startswith("pid="):
                try:
                    os.killpg(int(field[4:]), signal.SIGKILL)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass
