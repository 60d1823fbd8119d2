"""README.md's command blocks: each is marked, and the ``run`` ones do what the text says, as printed.

As printed means in the venv the text tells the reader to activate (its bin directory first on
PATH), from the repository root, with three things a test must own: the data dir is a temp dir
(``SCHEDULER_DATA_DIR``), the sample API listens on a port the OS picked and read back (the printed
``--port 8080`` becomes ``--port 0``, and ``SALES_API_URL`` points at it), and the daemon
(``scheduler run``) is stopped with SIGTERM once it has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
from programs import BIN_DIR
from readme_blocks import KINDS, argv, sh_blocks

REPO = Path(__file__).resolve().parents[2]


def test_every_sh_block_says_whether_it_runs_as_printed() -> None:
    blocks = sh_blocks()
    assert blocks, "README.md has no ```sh blocks"
    for block in blocks:
        where = f"README.md:{block.line}"
        assert block.kind in KINDS, f"{where}: no <!-- readme-check: {'|'.join(KINDS)} --> marker before the block"
        if block.kind == "edit-before-use":  # visible to a reader, not only in the comment
            assert "edit before use" in block.prose.lower(), f"{where}: the text before it must say **Edit before use**"
        if block.kind == "setup":
            assert block.reason, f"{where}: a setup block names where it is exercised: (reason)"
    assert any(b.kind == "run" for b in blocks) and any(b.kind == "docker" for b in blocks)


def test_markers_are_read_from_the_line_before_the_block() -> None:
    text = ("Intro.\n\n<!-- readme-check: setup (ci) -->\n```sh\nmake \\\n  all   # build\n# note\n```\n"
            "**Edit before use**: x.\n\n<!-- readme-check: edit-before-use -->\n```sh\ncurl URL\n```\n"
            "```yaml\na: 1\n```\n```sh\nls\n```\n")  # fmt: skip
    first, second, third = sh_blocks(text)
    assert (first.kind, first.reason, first.commands()) == ("setup", "ci", ["make    all   # build"])
    assert argv(first.commands()[0]) == ["make", "all"]
    assert (second.kind, "Edit before use" in second.prose) == ("edit-before-use", True)
    assert third.kind is None  # unmarked: the first test would name it


class BlockRunner:
    """Runs a ``run`` block's commands one by one, as the text describes them."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {**os.environ, "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
                    "VIRTUAL_ENV": str(BIN_DIR.parent), "SCHEDULER_DATA_DIR": str(data_dir)}  # fmt: skip
        self.env.pop("SCHEDULER_CONFIG", None)
        self.printed_port: str | None = None
        self.api_url: str | None = None
        self.background: list[subprocess.Popen[str]] = []
        self.outputs: dict[str, str] = {}

    def run(self, command: str) -> None:
        words = argv(command)
        if words[-1] == "&" and words[:3] == ["python", "-m", "scheduler.sample.api"]:
            self.start_sample_api(words[:-1])
        elif words[0] == "export":
            name, _, value = words[1].partition("=")
            if name == "SALES_API_URL":  # the printed port is the one the API was told; ours was read back
                assert self.printed_port and value == f"http://127.0.0.1:{self.printed_port}", command
                value = self.api_url or value
            self.env[name] = value
        elif words == ["scheduler", "run"]:
            self.run_daemon(command)
        else:
            proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            self.outputs[" ".join(words[:2])] = proc.stdout

    def start_sample_api(self, words: list[str]) -> None:
        port_at = words.index("--port") + 1
        self.printed_port = words[port_at]
        words = [*words[:port_at], "0", *words[port_at + 1:]]
        proc = subprocess.Popen(words, cwd=REPO, env=self.env, stdout=subprocess.PIPE, text=True)
        self.background.append(proc)
        assert proc.stdout is not None
        self.api_url = proc.stdout.readline().strip()  # the URL, with the port the OS gave it
        assert self.api_url.startswith("http://127.0.0.1:"), self.api_url

    def run_daemon(self, command: str) -> None:
        log = Path(self.env["SCHEDULER_DATA_DIR"]).parent / "daemon.log"
        with log.open("w") as out:
            proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=REPO, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "scheduler started" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the daemon did not start:\n" + log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for proc in self.background:
            proc.terminate()
            proc.wait(10)


def test_run_blocks_work_as_printed(tmp_path: Path) -> None:
    [block] = [b for b in sh_blocks() if b.kind == "run"]
    data = tmp_path / "data"
    runner = BlockRunner(data)
    try:
        for command in block.commands():
            runner.run(command)
    finally:
        runner.close()
    # What the text says each did.
    assert runner.outputs["scheduler validate"].startswith("config OK")
    assert "daily_sales" in runner.outputs["scheduler list"]
    parts = sorted((data / "sales" / "date=2026-11-05").glob("part-*.parquet"))
    assert parts and sum(pq.read_metadata(p).num_rows for p in parts) > 0
    history = runner.outputs["scheduler history"]
    assert "daily_sales" in history and "success" in history and "2026-11-05" in history

