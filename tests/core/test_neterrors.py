"""Transport errors named in one line, whichever client raised them: requests (the container
kind's Docker SDK) or urllib3 alone (the ingest fetcher).  Real sockets on 127.0.0.1 only."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import requests
import urllib3

from scheduler.neterrors import Failure, classify


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts and reads a request but never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    for conn in held:
        conn.close()


def requests_error(call: object) -> BaseException:
    with pytest.raises(requests.RequestException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def urllib3_error(call: object) -> BaseException:
    with pytest.raises(urllib3.exceptions.HTTPError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_a_refused_connection_reads_the_same_from_both_clients(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/v1?api_key=k"
    pool = urllib3.PoolManager(retries=urllib3.Retry(total=0))
    for error in (requests_error(lambda: requests.get(url, timeout=5)),
                  urllib3_error(lambda: pool.request("GET", url, timeout=5))):
        assert classify(error) == Failure("connect", "connection refused")


def test_a_read_timeout_reads_the_same_from_both_clients(silent_port: int) -> None:
    url = f"http://127.0.0.1:{silent_port}/v1"
    pool = urllib3.PoolManager(retries=urllib3.Retry(total=0))
    for error in (requests_error(lambda: requests.get(url, timeout=(5, 0.2))),
                  urllib3_error(lambda: pool.request("GET", url, timeout=urllib3.Timeout(connect=5, read=0.2)))):
        assert classify(error, 5, 0.2) == Failure("read", "no response within 0.2s (read timeout)")
