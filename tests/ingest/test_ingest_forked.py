"""The fetch side in a process of its own: what crosses the pipe, how errors and an early end
reach the run, that the child never outlives its run, and that a run with no other thread uses it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest
from polling import wait_for

from scheduler.kinds.base import RunContext
from scheduler.kinds.ingest import execute, forked, prefetch
from scheduler.kinds.ingest.forked import CrossedError, Inbox, Outbox
from scheduler.kinds.ingest.pacing import FetchError
from scheduler.kinds.ingest.pages import ArrowPage
from scheduler.kinds.ingest.pipeline import IngestFailed
from scheduler.kinds.ingest.prefetch import start_fetching
from scheduler.kinds.ingest.spec import IngestJob
from scheduler.sample.api import start_server


def _pipes(ahead: int, steady: int) -> tuple[Outbox, Inbox, int]:
    read, write = os.pipe()
    control_read, control_write = os.pipe()
    return Outbox(write, control_read, ahead, steady), Inbox(read), control_write


def test_messages_cross_whole_and_in_order() -> None:
    outbox, inbox, control = _pipes(ahead=1000, steady=1000)
    sizes = [0, 1, 65_535, 65_536, 3_000_000, 17]  # around the pipe's buffer, and past it
    received: list[Any] = []
    reader = threading.Thread(target=lambda: received.extend(inbox.get() for _ in sizes))
    reader.start()
    column = pa.array([1, None, 3])
    for index, size in enumerate(sizes):
        outbox.send(("page", b"x" * size, index, column))
    outbox.close()
    reader.join(timeout=30)
    assert [(kind, len(body), index) for kind, body, index, _ in received] == [
        ("page", size, index) for index, size in enumerate(sizes)]
    assert all(message[3].equals(column) for message in received)
    with pytest.raises(EOFError):
        inbox.get()
    inbox.close()
    os.close(control)


def _page(columns: int, records: int = 3) -> ArrowPage:
    content = b'{"data": [' + b",".join(b'{"n": %d}' % i for i in range(50_000)) + b"]}"
    arrays = {f"c{i}": pa.array([i if r % 2 else None for r in range(records)], type=pa.int64())
              for i in range(columns)}
    arrays["text"] = pa.array(["a" * r for r in range(records)])
    arrays["empty"] = pa.array([None] * records, type=pa.string())  # zero-length data buffer
    return ArrowPage(content, records, arrays, {"page": 1}, "data")


def _same_page(got: ArrowPage, sent: ArrowPage) -> bool:
    return bool(type(got.content) is bytes and got.content == sent.content and got.rows == sent.rows
                and got.body == sent.body and got.records_path == sent.records_path
                and list(got.columns) == list(sent.columns)
                and all(got.columns[n].equals(a) for n, a in sent.columns.items()))


def test_a_page_crosses_with_its_columns_out_of_band_and_aligned() -> None:
    page = _page(columns=40, records=1000)
    parts = forked.frame(("page", page, 1))
    size, count = forked._HEADER.unpack_from(parts[0])
    column_buffers = [b for a in page.columns.values() for b in a.buffers() if b is not None]
    assert count == len(column_buffers)  # every Arrow buffer out of band, the page bytes in the pickle
    assert len(page.content) < size < len(page.content) + 20_000
    assert sum(p.nbytes for p in parts[2:]) % 64 == 0  # each buffer padded to the next 64 bytes
    outbox, inbox, control = _pipes(ahead=1000, steady=1000)
    received: list[Any] = []
    reader = threading.Thread(target=lambda: received.append(inbox.get()))
    reader.start()
    outbox.send(("page", page, 1))
    outbox.close()
    reader.join(timeout=30)
    (kind, got, pages), = received
    assert (kind, pages) == ("page", 1) and _same_page(got, page)
    addresses = [b.address for a in got.columns.values() for b in a.buffers() if b is not None and b.size]
    assert addresses and all(address % 16 == 0 for address in addresses)
    inbox.close()
    os.close(control)


def test_messages_cross_whole_when_the_pipe_takes_a_few_bytes_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # short writes anywhere: inside a buffer, inside padding, at part boundaries, and a refusal now
    # and then; messages of more parts than one writev takes (1,024)
    sizes = iter([1, 7, 0, 63, 64, 65, 4096, 3, 100_000] * 10_000)
    real_write = os.write

    def stingy_write(fd: int, data: Any) -> int:
        allowed = next(sizes)
        if not allowed:
            raise BlockingIOError
        return real_write(fd, bytes(memoryview(data)[:allowed]))

    def stingy_writev(fd: int, parts: list[memoryview]) -> int:
        return stingy_write(fd, b"".join(parts))

    monkeypatch.setattr(forked.os, "write", stingy_write)
    monkeypatch.setattr(forked.os, "writev", stingy_writev)
    outbox, inbox, control = _pipes(ahead=2, steady=2)
    pages = [_page(columns=n) for n in (0, 1, 600, 5)]  # 600 columns: over 1,800 parts
    received: list[Any] = []
    reader = threading.Thread(target=lambda: received.extend(inbox.get() for _ in pages))
    reader.start()
    for index, page in enumerate(pages):
        outbox.send(("page", page, index))
    outbox.close()
    reader.join(timeout=60)
    assert [m[2] for m in received] == list(range(len(pages)))
    assert all(_same_page(m[1], page) for m, page in zip(received, pages, strict=True))
    with pytest.raises(EOFError):
        inbox.get()
    inbox.close()
    os.close(control)


def test_the_sender_holds_at_most_ahead_messages_then_the_steady_count() -> None:
    outbox, inbox, control = _pipes(ahead=3, steady=1)
    big = b"x" * 2_000_000  # more than the pipe holds: every message after the first waits in the outbox
    sent: list[int] = []

    def send_all() -> None:
        for index in range(8):
            outbox.send(("page", big, index))
            sent.append(index)
        outbox.close()  # what is still waiting goes out, as a child's last step

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    wait_for(lambda: len(sent) >= 3, what="three messages handed over")
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: len(sent) > 3, timeout=1.0, what="a message past the bound")
    assert len(outbox._pending) <= 3 + 1
    os.write(control, b"c")  # the parent consumes: from now on one message ahead
    got = [inbox.get()[2] for _ in range(8)]
    sender.join(timeout=30)
    assert got == list(range(8)) and sent == list(range(8))
    inbox.close()
    os.close(control)


class _Unpicklable(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.callback = lambda: None  # a lambda cannot be pickled


def _raise_deep() -> None:
    raise _Unpicklable("token=*** could not be read")


def test_an_error_that_cannot_be_pickled_keeps_its_name_text_and_traceback() -> None:
    try:
        _raise_deep()
    except _Unpicklable as exc:
        crossed = CrossedError.of(exc)
    assert crossed.pickled is None
    again = crossed.exception()
    assert type(again).__name__ == "_Unpicklable" and str(again) == "token=*** could not be read"
    text = "".join(traceback.format_exception(again))
    assert "in the fetch process:" in text and "_raise_deep" in text


def test_an_error_that_pickles_crosses_as_itself() -> None:
    again = CrossedError.of(FetchError("GET /v1/sales: HTTP 503")).exception()
    assert type(again) is FetchError and str(again) == "GET /v1/sales: HTTP 503"


@pytest.mark.parametrize("in_process", [False, True])
def test_a_source_error_fails_the_run_with_the_same_reason_either_way(
        in_process: bool, raw_server: Callable[..., Any], sales_spec: Callable[..., IngestJob],
        make_ctx: Callable[..., RunContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")

    server = raw_server(refuse)
    monkeypatch.setattr(prefetch, "may_fork", lambda: in_process)
    with pytest.raises(IngestFailed) as failed:
        execute(sales_spec(server.url), make_ctx(tmp_path))
    assert "404" in str(failed.value) and "fetch process" not in str(failed.value)
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_fetch_process_that_dies_fails_the_run_naming_how(
        sales_spec: Callable[..., IngestJob], make_ctx: Callable[..., RunContext], tmp_path: Path) -> None:
    server, url = start_server(records_per_day=200 * 50, per_page=50)
    try:
        fetching = start_fetching(sales_spec(url, source={"pagination": {"page_size": 50}}), make_ctx(tmp_path),
                                  in_process=True)
        try:
            kind, page = fetching.get()
            assert kind == "page" and isinstance(page, ArrowPage) and page.rows == 50
            assert fetching._child is not None
            os.kill(fetching._child.pid, signal.SIGKILL)
            items = []
            while not items or items[-1][0] == "page":  # pages already in the pipe come first
                items.append(fetching.get())
            kind, error = items[-1]
            assert kind == "error" and isinstance(error, FetchError)
            assert str(error) == "the fetch process ended early (killed by SIGKILL)"
        finally:
            fetching.close()
        with pytest.raises(ChildProcessError):  # reaped
            os.waitpid(fetching._child.pid, os.WNOHANG)
    finally:
        server.shutdown()
        server.server_close()


def test_close_ends_a_fetch_process_that_still_fetches(
        raw_server: Callable[..., Any], sales_spec: Callable[..., IngestJob], make_ctx: Callable[..., RunContext],
        tmp_path: Path) -> None:
    answered = threading.Event()

    def hang(conn: socket.socket, request: bytes) -> None:
        answered.wait(timeout=60)

    server = raw_server(hang)
    fetching = start_fetching(sales_spec(server.url), make_ctx(tmp_path), in_process=True)
    try:
        wait_for(lambda: server.requests == 1, what="the request reaching the server")
        assert fetching._child is not None
        pid = fetching._child.pid
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        fetching.close()
        with pytest.raises(ChildProcessError):  # killed and reaped
            os.waitpid(pid, os.WNOHANG)
    finally:
        answered.set()


def test_a_worker_fetches_in_a_child_that_dies_with_it(
        raw_server: Callable[..., Any], tmp_path: Path, write_config: Any, scheduler_cmd: list[str],
        scheduler_env: dict[str, str]) -> None:
    released = threading.Event()
    page = json.dumps({"data": [{"id": 1}], "next": None}).encode()

    def first_then_hang(conn: socket.socket, request: bytes) -> None:
        if not re.search(rb"[?&]page=1[ &]", request.split(b"\r\n")[0]):
            released.wait(timeout=120)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(page)).encode() + b"\r\n\r\n" + page)

    server = raw_server(first_then_hang)
    config = write_config(f"""
        jobs:
          daily_sales:
            kind: ingest
            source:
              base_url: {server.url}
              path: /v1/sales
              records: data
              pagination: {{type: page_number, page_size: 1}}
            sink:
              dataset: sales
              schema: {{id: int}}
    """)
    data = tmp_path / "data"
    proc = subprocess.Popen([*scheduler_cmd, "run-job", "daily_sales", "--date", "2026-11-05", "--config",
                             str(config), "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=scheduler_env)
    try:
        wait_for(lambda: server.requests >= 2, what="the second page requested", timeout=60)
        cli = psutil.Process(proc.pid)
        worker = wait_for(lambda: next((p for p in cli.children() if "scheduler.worker" in " ".join(p.cmdline())),
                                       None), what="the worker")
        [fetcher] = worker.children()
        worker.kill()
        wait_for(lambda: not fetcher.is_running() or fetcher.status() == psutil.STATUS_ZOMBIE,
                 what="the fetch process ending with its worker")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, out + err
        assert not list(data.rglob("*.parquet"))
    finally:
        released.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_process_with_no_other_thread_forks_and_one_with_threads_does_not() -> None:
    assert threading.active_count() > 1 or prefetch.may_fork()
    done = threading.Event()
    thread = threading.Thread(target=done.wait, daemon=True)
    thread.start()
    try:
        assert not prefetch.may_fork()
    finally:
        done.set()
        thread.join()


def test_the_fetch_side_reads_pages_without_importing_pyarrow_compute() -> None:
    # the worker forks the fetch process before the transform side's imports: what the fetch side
    # needs to read pages (here with a field mixing numbers and strings) is all it imports; a field
    # whose text Arrow would read as times (rewritten, then cut) imports the kernels on first use
    script = (
        "import sys, json\n"
        "import scheduler.kinds.ingest.prefetch\n"
        "from scheduler.kinds.ingest.pages import PageReader, Split\n"
        "reader = PageReader('data')\n"
        "rows = [{'id': i, 'q': i if i % 3 else str(i), 'sku': f'SKU-{i}', 'c': {'e': 'x'}}"
        " for i in range(50)]\n"
        "pages = [reader.read(json.dumps({'data': rows, 'page': n}).encode()) for n in range(3)]\n"
        "assert all(p is not None and isinstance(p.columns['q'], Split) for p in pages), pages\n"
        "print('pyarrow.compute' in sys.modules, 'pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
