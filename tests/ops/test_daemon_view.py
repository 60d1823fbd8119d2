"""The operations features see the daemon only through ``DaemonView``, and it lists exactly what they use."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from structlog.testing import capture_logs

from scheduler.config.loader import load_config
from scheduler.daemon import Daemon
from scheduler.daemon_view import DaemonExtension, DaemonView
from scheduler.ops import attach
from scheduler.state import StateStore

OPS = Path(__file__).resolve().parents[2] / "scheduler" / "ops"
PROTOCOL_MEMBERS = {name for name in vars(DaemonView) if not name.startswith("_")}


def _is_daemon(node: ast.expr) -> bool:
    """``daemon``, ``self.daemon`` or ``ops.daemon``: how the operations modules name it."""
    return (isinstance(node, ast.Name) and node.id == "daemon") or (
        isinstance(node, ast.Attribute) and node.attr == "daemon"
        and isinstance(node.value, ast.Name) and node.value.id in ("self", "ops"))


def daemon_reads() -> dict[str, set[str]]:
    """Attribute -> the ops modules reading it from the daemon (``daemon.X``, ``self.daemon.X``)."""
    reads: dict[str, set[str]] = {}
    for path in sorted(OPS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and _is_daemon(node.value):
                reads.setdefault(node.attr, set()).add(path.name)
    return reads


def test_daemon_view_lists_exactly_what_ops_reads() -> None:
    reads = daemon_reads()
    assert set(reads) == PROTOCOL_MEMBERS, {"read but not in DaemonView": sorted(set(reads) - PROTOCOL_MEMBERS),
                                            "in DaemonView but never read": sorted(PROTOCOL_MEMBERS - set(reads))}


def test_no_untyped_daemon_parameters_in_ops() -> None:
    untyped = []
    for path in sorted(OPS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.arg) and node.arg == "daemon":
                if node.annotation is None or ast.unparse(node.annotation) != "DaemonView":
                    untyped.append(f"{path.name}:{node.lineno}")
    assert not untyped


def test_the_daemon_is_a_daemon_view_and_ops_extensions_are_extensions(tmp_path: Path) -> None:
    config_file = tmp_path / "jobs.yaml"
    config_file.write_text('http:\n  listen: "127.0.0.1:0"\njobs:\n  noop:\n    kind: command\n'
                           '    command: ["true"]\n    every: 1h\n'
                           '    expect_success_within: 2h\n', encoding="utf-8")
    store = StateStore.open(tmp_path / "state.db")
    with capture_logs() as logs:  # before the daemon binds its logger
        daemon = Daemon(load_config(config_file), config_file, tmp_path, store)
        try:
            assert isinstance(daemon, DaemonView)
            attach(daemon)  # binds the endpoint on a free port of 127.0.0.1
            names = sorted(type(ext).__name__ for ext in daemon.extensions)
            assert names == ["FreshnessWatch", "OpsMetrics", "RunAlerts", "RunPings", "_Closer"]
            assert all(isinstance(ext, DaemonExtension) for ext in daemon.extensions)
            daemon.step()  # every extension's on_tick, through the typed hooks
            for ext in daemon.extensions:
                ext.on_shutdown(daemon)
        finally:
            store.close()
            os.close(daemon._wake_r)
            os.close(daemon._wake_w)
    events = [e["event"] for e in logs]
    assert "http endpoint listening" in events
    assert not [e for e in logs if e["log_level"] == "error"], logs
