"""The application context: options resolved once, the store opened once, the run path kept light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.app.context import App, Options, open_state, state_path
from scheduler.errors import StateError

JOBS = """
    jobs:
      idle: {kind: command, schedule: "0 0 1 1 *", command: ["true"]}
"""


def test_options_resolve_flag_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCHEDULER_CONFIG", raising=False)
    monkeypatch.delenv("SCHEDULER_DATA_DIR", raising=False)
    assert Options().config_path == Path("config")
    assert Options().data_root == tmp_path / "data"
    monkeypatch.setenv("SCHEDULER_CONFIG", "/etc/jobs.yaml")
    monkeypatch.setenv("SCHEDULER_DATA_DIR", "from-env")
    assert Options().config_path == Path("/etc/jobs.yaml")
    assert Options().data_root == tmp_path / "from-env"  # always absolute
    given = Options(config="cfg/", data_dir="/srv/data")
    assert (given.config_path, given.data_root) == (Path("cfg/"), Path("/srv/data"))


def test_the_store_is_opened_on_first_use_once_and_closed(write_config, tmp_path):
    options = Options(config=str(write_config(JOBS)), data_dir=str(tmp_path / "data"))
    with App.inspect(options) as app:
        assert app._store is None  # reading the config opens nothing
        store = app.store
        assert app.store is store
        assert store.ping()
        assert state_path(app.config, app.data_dir) == tmp_path / "data" / ".scheduler" / "state.db"
    assert app._store is None
    with pytest.raises(Exception, match="closed"):
        store.history(None, 1)


def test_state_path_from_the_config_wins(write_config, tmp_path):
    db = tmp_path / "elsewhere" / "state.db"
    config = write_config(f"\n    state: {{path: {db}}}" + JOBS)
    with App.inspect(Options(config=str(config), data_dir=str(tmp_path / "data"))) as app:
        app.store.ping()
    assert db.exists() and not (tmp_path / "data").exists()


def test_a_store_that_cannot_be_opened_is_a_state_error(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data dir should be")
    with pytest.raises(StateError, match=r"cannot open the state store .*data/\.scheduler/state\.db"):
        open_state(None, blocker)


def test_the_run_path_imports_no_heavy_library(write_config, tmp_path, scheduler_env):
    """``scheduler run`` as the command line wires it: cli, app context, daemon, ops attached, one step."""
    config = write_config(JOBS)
    # a run-job first fills the config cache: the daemon must not read it (its cipher is heavy)
    subprocess.run([sys.executable, "-m", "scheduler", "validate", "--config", str(config)], env=scheduler_env,
                   check=True, capture_output=True, timeout=60)
    code = (
        "import sys\n"
        "from scheduler import cli\n"
        "from scheduler.app.context import App, Options\n"
        "from scheduler.ops import attach\n"
        f"options = Options(config={str(config)!r}, data_dir={str(tmp_path / 'data')!r})\n"
        "app = App.load(options, cached=False)\n"  # what `scheduler run` does (cmd_run)
        "app.prepare_data_dir()\n"
        "daemon = app.daemon()\n"
        "attach(daemon)\n"
        "daemon.step()\n"
        "app.close()\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'numpy', 'docker', 'requests', 'pydantic', 'rich',\n"
        "                      'cryptography', 'psycopg') if m in sys.modules]\n"
        "print('heavy:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=scheduler_env,
                         check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "heavy:"
