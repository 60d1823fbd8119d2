"""Fixtures for the operations tests (helpers live in ``ops_helpers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops_helpers import Daemon, Receiver


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


@pytest.fixture
def start_daemon(workdir: Path) -> Iterator[Callable[[str], Daemon]]:
    """Write a config (YAML text) and start a daemon on it; stopped at teardown."""
    started: list[Daemon] = []

    def start(config_text: str) -> Daemon:
        config = workdir / "scheduler.yaml"
        config.write_text(config_text, encoding="utf-8")
        daemon = Daemon(config, workdir / "data", workdir).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
