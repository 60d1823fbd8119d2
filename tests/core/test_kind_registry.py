"""The kind registry: a kind that is not built in is one module plus one registry line.

``toykind`` (beside this file) is such a kind.  It is added per test, through the registry's API
(``with_plugins``) or a child's environment (``SCHEDULER_KINDS``), never to this process's
globals: the next test sees the built-in kinds only.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.config import load_config
from scheduler.config.loader import load_models
from scheduler.errors import ConfigError
from scheduler.kinds import python as python_kind
from scheduler.kinds.hooks import run_hooks
from scheduler.kinds.registry import BUILTIN, KINDS_ENV, ChildHook, Kind, Registry, current, resolve
from scheduler.logs import configure
from scheduler.process import ChildTable
from scheduler.runner import Runner, RunRequest
from scheduler.state import StateStore

HERE = Path(__file__).resolve().parent
SLOT = datetime(2026, 11, 6, 2, 15, tzinfo=UTC)
TOY_YAML = f"""
    jobs:
      hello:
        kind: toy
        message: hi
        repeat: 3
        env: {{PYTHONPATH: "{HERE}"}}
      plain:
        kind: command
        command: ["true"]
"""


@pytest.fixture
def toy_registry() -> Registry:
    return BUILTIN.with_plugins("toykind:KIND")


def test_a_toy_kind_loads_and_runs_in_a_real_worker(toy_registry: Registry, write_config, tmp_path: Path) -> None:
    logs = io.StringIO()
    configure("info", "json", stream=logs)
    path = write_config(TOY_YAML)
    models = load_models(path, env={}, registry=toy_registry)
    assert type(models.jobs["hello"]).__name__ == "ToyJob" and models.jobs["hello"].repeat == 3
    config = load_config(path, env={}, registry=toy_registry)
    store = StateStore.open(tmp_path / "state.db")
    try:
        runner = Runner(config, store, tmp_path / "data", ChildTable(), registry=toy_registry)
        result = runner.execute(RunRequest("hello", SLOT))
        assert result.status == "success", result.error
        record = store.get_run(result.run_id)
        assert record is not None and record.status == "success" and record.metrics["rows_written"] == 3
        assert store.watermark("hello") == "hi"
    finally:
        store.close()
    lines = (tmp_path / "data" / "toy" / "hello.txt").read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("hi ") for line in lines)
    events = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    written = [e for e in events if e.get("event") == "toy written"]
    assert len(written) == 1 and written[0]["worker_pid"] != os.getpid(), events  # ran in the worker child


def test_registering_a_kind_leaks_nowhere(toy_registry: Registry, write_config) -> None:
    path = write_config(TOY_YAML)
    assert load_config(path, env={}, registry=toy_registry).jobs["hello"].kind == "toy"
    assert current() is BUILTIN and BUILTIN.names() == ["command", "python", "ingest", "container"]
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == (f"{path}:4: job 'hello': kind: unknown job kind 'toy' "
                               "(one of command, python, ingest, container)")


def test_a_kind_forbids_its_keys_and_the_model_reports_at_the_line(toy_registry: Registry, write_config) -> None:
    path = write_config("""
        jobs:
          hello:
            kind: toy
            message: hi
            repeat: 0
            sudo: true
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, registry=toy_registry)
    assert [str(issue) for issue in info.value.issues] == [
        f"{path}:6: job 'hello': repeat: must be at least 1",
        f"{path}:7: job 'hello': sudo: 'sudo' is not allowed: toys never run as root",
    ]


def _toy_env(scheduler_env: dict[str, str], kinds: str) -> dict[str, str]:
    return {**scheduler_env, KINDS_ENV: kinds,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), scheduler_env.get("PYTHONPATH")]))}


def test_run_job_runs_a_kind_named_in_the_environment(scheduler_cmd, scheduler_env, write_config,
                                                       tmp_path: Path) -> None:
    """Compile child, run-job and worker are three processes: the environment tells each the kinds."""
    config, data = write_config(TOY_YAML), tmp_path / "data"
    proc = subprocess.run([*scheduler_cmd, "run-job", "hello", "--date", "2026-11-05", "--config", str(config),
                           "--data-dir", str(data)], env=_toy_env(scheduler_env, "toykind:KIND"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (data / "toy" / "hello.txt").read_text() == "hi 2026-11-05\n" * 3
    store = StateStore.open(data / ".scheduler" / "state.db")
    try:
        [record] = store.history("hello")
    finally:
        store.close()
    assert record.status == "success" and record.metrics["rows_written"] == 3
    assert record.logical_date.isoformat() == "2026-11-05"


def test_a_kind_that_cannot_be_loaded_is_one_line_and_exit_2(scheduler_cmd, scheduler_env, write_config,
                                                              tmp_path: Path) -> None:
    config = write_config(TOY_YAML)
    proc = subprocess.run([*scheduler_cmd, "validate", "--config", str(config)],
                          env=_toy_env(scheduler_env, "toykind:NOPE"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"{KINDS_ENV}=toykind:NOPE: module 'toykind' has no attribute 'NOPE'"]


def test_kind_records_are_checked() -> None:
    with pytest.raises(ValueError, match="set exactly one of 'argv'"):
        Kind("both", spec="m:J", argv="m:argv", executor="m:execute")
    with pytest.raises(ValueError, match="set exactly one of 'argv'"):
        Kind("neither", spec="m:J")
    with pytest.raises(ValueError, match="job kind registered twice: command"):
        Registry((*BUILTIN.kinds, Kind("command", spec="m:J", executor="m:execute")))
    with pytest.raises(TypeError, match="toykind.toy:ToyJob is a ModelMetaclass, not a"):
        BUILTIN.with_plugins("toykind.toy:ToyJob")
    toy = BUILTIN.with_plugins("toykind:KIND")
    assert toy.names()[-1] == "toy" and toy.environ() == {KINDS_ENV: "toykind:KIND"}
    assert BUILTIN.names() == ["command", "python", "ingest", "container"]  # unchanged


def test_one_resolver_and_its_error_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toykind.toy

    assert resolve("toykind.toy:execute") is toykind.toy.execute
    with pytest.raises(ModuleNotFoundError, match="^No module named 'toykind_nowhere'$"):
        resolve("toykind_nowhere:f")
    with pytest.raises(AttributeError) as missing:
        resolve("toykind.toy:nope")
    with pytest.raises(AttributeError) as python_says:
        _ = toykind.toy.nope  # type: ignore[attr-defined]  # Python's own words, to compare
    assert str(missing.value) == str(python_says.value) == "module 'toykind.toy' has no attribute 'nope'"
    # the python kind's words for a user's function
    with pytest.raises(AttributeError, match="^module 'toykind.toy' has no function 'nope'$"):
        python_kind.resolve("toykind.toy:nope")
    # an AttributeError raised while importing the module is the module's own, unchanged
    (tmp_path / "broken_on_import.py").write_text("import os\nos.no_such_thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AttributeError, match="^module 'os' has no attribute 'no_such_thing'$"):
        resolve("broken_on_import:f", noun="function")


def test_ingest_hooks_load_through_the_same_resolver() -> None:
    import toykind.toy

    from scheduler.kinds.ingest.transform import TransformError, load_hook

    assert load_hook("toykind.toy:execute") is toykind.toy.execute
    with pytest.raises(TransformError) as info:
        load_hook("toykind.toy:nope")
    assert str(info.value) == "cannot load hook 'toykind.toy:nope': module 'toykind.toy' has no attribute 'nope'"


class _Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.warnings.append((event, fields))


def test_daemon_hooks_run_in_a_child_for_kinds_with_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    hook = ChildHook(module="toykind.sweep", section="toys", done="toy swept", failed="toy sweep failed",
                     unavailable_prefix="no toy box at ", unavailable="toy jobs need a toy box")
    toy = Kind("toy", spec="toykind.toy:ToyJob", executor="toykind.toy:execute", on_start=(hook,))
    registry = Registry((*BUILTIN.kinds, toy))
    jobs = {"b": "toy", "a": "toy", "c": "command"}

    def run(section: dict, stage: str = "start", kinds: dict[str, str] = jobs) -> list[tuple[str, dict]]:
        log = _Log()
        run_hooks(registry, stage, kinds, lambda name: section if name == "toys" else None, log)  # type: ignore[arg-type]
        return log.warnings

    assert run({"swept": ["x", "y"]}) == [("toy swept", {"detail": "swept x"}), ("toy swept", {"detail": "swept y"})]
    assert run({"fail": "no toy box at /box"}) == [("toy jobs need a toy box", {"jobs": ["a", "b"],
                                                                                 "error": "no toy box at /box"})]
    assert run({"fail": "lid stuck"}) == [("toy sweep failed", {"error": "lid stuck"})]
    assert run({"swept": ["x"]}, stage="forced_stop") == []  # the toy has no step there
    assert run({"swept": ["x"]}, kinds={"c": "command"}) == []  # no toy jobs: no child at all
