"""Suite-wide fixtures and the rule that Docker, PostgreSQL and browser tests may not be skipped in CI.

Tests marked ``docker`` (or ``postgres``, or ``browser``) skip on a laptop without an engine (or the
PostgreSQL binaries, or Chromium and Playwright); with ``CI=true`` a skip of such a test is turned
into a failure, so a missing engine, server or browser can never pass CI silently.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOT_SKIPPABLE_IN_CI = ("docker", "postgres", "browser")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("CI") != "true":
        return
    for marker in NOT_SKIPPABLE_IN_CI:
        if item.get_closest_marker(marker):
            report.outcome = "failed"
            report.longrepr = f"{marker} test skipped under CI=true: {report.longrepr}"
            return


@pytest.fixture(autouse=True)
def _reset_logging() -> object:
    """A test that configures logging in-process (``cli.main([...])``) points structlog at pytest's
    captured stream of that test; later tests must not write to the closed stream."""
    yield
    import structlog

    structlog.reset_defaults()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML (dedented) to a file in tmp_path and return its path."""

    def write(text: str, name: str = "jobs.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def scheduler_env() -> dict[str, str]:
    """Environment for ``python -m scheduler`` child processes started by tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("SCHEDULER_CONFIG", None)
    env.pop("SCHEDULER_DATA_DIR", None)
    return env


@pytest.fixture
def scheduler_cmd() -> list[str]:
    return [sys.executable, "-m", "scheduler"]
