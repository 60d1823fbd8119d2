"""Worker runs forked by the fork server: real server, real children, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from coretools import processes_with, unique_seconds
from polling import wait_for

from scheduler.config import load_config
from scheduler.forkserver import ForkServer, fork_supported
from scheduler.logs import configure
from scheduler.process import ChildTable
from scheduler.runner import RunHandle, Runner, RunRequest
from scheduler.state import StateStore

SLOT = datetime(2026, 11, 6, 2, 15, tzinfo=UTC)

pytestmark = pytest.mark.skipif(not fork_supported(), reason="no fork server on this platform")


@pytest.fixture
def forked(write_config, tmp_path):
    """``make(yaml) -> (runner, server)``: a Runner whose worker runs come from a real fork server."""
    servers: list[ForkServer] = []
    stores: list[StateStore] = []

    def make(text: str) -> tuple[Runner, ForkServer]:
        config = load_config(write_config(text))
        configure("debug", "json", config.secrets, stream=open(os.devnull, "w"))  # noqa: SIM115
        children = ChildTable()
        server = ForkServer(children, enabled=True)
        store = StateStore.open(tmp_path / "state.db")
        servers.append(server)
        stores.append(store)
        return Runner(config, store, tmp_path / "data", children, "debug", server), server

    yield make
    for server in servers:
        server.close()
    for store in stores:
        store.close()


def module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return directory


def run(runner: Runner, job: str) -> object:
    return runner.execute(RunRequest(job=job, slot=SLOT, trigger="manual"))


def test_a_forked_run_has_its_own_process_group_and_is_not_the_server(forked, tmp_path):
    out = tmp_path / "facts.json"
    code = module(tmp_path / "code", "facts", f"""
        import json, os, sys
        def job(ctx):
            with open({str(out)!r}, "w") as fh:
                json.dump({{"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
                           "sid": os.getsid(0), "argv0": sys.argv[0]}}, fh)
    """)
    runner, server = forked(f"""
        jobs:
          py: {{kind: python, function: "facts:job", cwd: {code}}}
    """)
    result = run(runner, "py")
    assert result.status == "success", result.error
    facts = json.loads(out.read_text())
    assert server.pid is not None and server.starts == 1
    assert facts["pid"] != server.pid and facts["ppid"] == server.pid  # forked by the server
    assert facts["pgid"] == facts["pid"] == facts["sid"]  # its own session and process group
    assert facts["pgid"] != os.getpgid(server.pid)
    assert len(os.listdir(f"/proc/{server.pid}/task")) == 1  # the server stays single-threaded


def test_a_timeout_kills_the_whole_group_including_a_grandchild(forked, tmp_path):
    marker = unique_seconds(307)
    code = module(tmp_path / "code", "spawner", f"""
        import subprocess, time
        def job(ctx):
            subprocess.Popen(["sleep", "{marker}"])
            time.sleep(300)
    """)
    runner, server = forked(f"""
        jobs:
          py: {{kind: python, function: "spawner:job", cwd: {code}, timeout: 2s, kill_grace: 1s}}
    """)
    holder: dict[str, object] = {}
    thread = threading.Thread(target=lambda: holder.update(result=run(runner, "py")))
    thread.start()
    wait_for(lambda: processes_with(f"sleep {marker}"), what="the grandchild to start")
    thread.join(60)
    result = holder["result"]
    assert result.status == "timeout" and result.timed_out
    wait_for(lambda: not processes_with(f"sleep {marker}"), what="the grandchild to be killed")
    assert server.pid is not None  # the server itself is untouched by the run's group kill


def test_killing_the_server_mid_run_fails_the_run_and_the_next_run_works(forked, tmp_path):
    marker = unique_seconds(311)
    started = tmp_path / "started"
    code = module(tmp_path / "code", "slow", f"""
        import pathlib, subprocess, time
        def job(ctx):
            subprocess.Popen(["sleep", "{marker}"])
            pathlib.Path({str(started)!r}).write_text("x")
            time.sleep(300)
        def quick(ctx):
            return {{"rows_written": 7}}
    """)
    runner, server = forked(f"""
        jobs:
          slow: {{kind: python, function: "slow:job", cwd: {code}, timeout: 2m}}
          quick: {{kind: python, function: "slow:quick", cwd: {code}}}
    """)
    handle = RunHandle(RunRequest(job="slow", slot=SLOT, trigger="manual"))
    thread = threading.Thread(target=runner.execute, args=(handle.request, handle))
    thread.start()
    wait_for(started.exists, what="the run to start")
    first_server = server.pid
    os.kill(first_server, signal.SIGKILL)
    assert handle.finished.wait(30)
    thread.join(10)
    assert handle.result.status == "failed"
    assert "fork server died (killed by SIGKILL)" in handle.result.error
    assert "\n" not in handle.result.error
    wait_for(lambda: not processes_with(f"sleep {marker}"), what="the lost run's processes to be killed")
    second = run(runner, "quick")
    assert second.status == "success", second.error
    assert second.metrics["rows_written"] == 7
    assert server.pid not in (None, first_server) and server.starts == 2


def test_consecutive_runs_share_no_module_state_environment_or_cwd(forked, tmp_path):
    out = tmp_path / "seen.json"
    a = module(tmp_path / "a", "isol", f"""
        import json, os, sys
        import helper
        SEEN = []
        def job(ctx):
            SEEN.append("a")
            os.environ["LEAKED"] = "from a"
            sys.modules["leaked_module"] = sys
            os.chdir("/")
            with open({str(out)!r}, "a") as fh:
                fh.write(json.dumps({{"run": "a", "helper": helper.WHERE, "cwd": os.getcwd()}}) + "\\n")
    """)
    module(a, "helper", "WHERE = 'a'\n")
    b = module(tmp_path / "b", "isol", f"""
        import json, os, sys
        import helper
        SEEN = []
        def job(ctx):
            SEEN.append("b")
            with open({str(out)!r}, "a") as fh:
                fh.write(json.dumps({{"run": "b", "helper": helper.WHERE, "seen": SEEN, "cwd": os.getcwd(),
                                      "leaked": os.environ.get("LEAKED"), "only_b": os.environ.get("ONLY_B"),
                                      "only_a": os.environ.get("ONLY_A"),
                                      "leaked_module": "leaked_module" in sys.modules,
                                      "path_a": {str(a)!r} in sys.path}}) + "\\n")
    """)
    module(b, "helper", "WHERE = 'b'\n")
    runner, _ = forked(f"""
        jobs:
          first: {{kind: python, function: "isol:job", cwd: {a}, env: {{ONLY_A: "1"}}}}
          second: {{kind: python, function: "isol:job", cwd: {b}, env: {{ONLY_B: "2"}}}}
    """)
    assert run(runner, "first").status == "success"
    assert run(runner, "second").status == "success"
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first == {"run": "a", "helper": "a", "cwd": "/"}
    assert second == {"run": "b", "helper": "b", "seen": ["b"], "cwd": str(b), "leaked": None, "only_b": "2",
                      "only_a": None, "leaked_module": False, "path_a": False}


def test_exit_codes_and_crashes_are_reported_and_stay_in_the_child(forked, tmp_path):
    code = module(tmp_path / "code", "crash", """
        import ctypes, os
        def exits(ctx):
            os._exit(3)
        def segfault(ctx):
            ctypes.string_at(0)
        def fine(ctx):
            return {"rows_written": 1}
    """)
    runner, server = forked(f"""
        jobs:
          exits: {{kind: python, function: "crash:exits", cwd: {code}}}
          segfault: {{kind: python, function: "crash:segfault", cwd: {code}}}
          fine: {{kind: python, function: "crash:fine", cwd: {code}}}
    """)
    exited = run(runner, "exits")
    assert (exited.status, exited.exit_code, exited.error) == ("failed", 3, "exited with code 3")
    crashed = run(runner, "segfault")
    assert crashed.status == "failed" and crashed.signal == signal.SIGSEGV
    assert crashed.error == "killed by signal SIGSEGV"
    pid = server.pid
    assert run(runner, "fine").status == "success"
    assert server.pid == pid and server.starts == 1  # neither crash touched the server


def test_output_lines_and_secrets_are_relayed_like_a_subprocess(forked, tmp_path, monkeypatch):
    monkeypatch.setenv("FS_TOKEN", "s3cr3t-token-value")
    code = module(tmp_path / "code", "talk", """
        import sys
        def job(ctx):
            print("plain line with s3cr3t-token-value")
            print("to stderr", file=sys.stderr)
            ctx.log.info("structured", n=5)
            raise RuntimeError("bad s3cr3t-token-value")
    """)
    runner, _ = forked(f"""
        jobs:
          py:
            kind: python
            function: "talk:job"
            cwd: {code}
            env: {{API_TOKEN: "${{FS_TOKEN}}"}}
    """)
    result = run(runner, "py")
    assert result.status == "failed"
    assert result.error == "RuntimeError: bad ***"
    lines = result.metrics["last_lines"]
    assert "plain line with ***" in lines and "to stderr" in lines
    assert not any("s3cr3t-token-value" in line for line in lines)


def test_the_daemon_side_imports_no_heavy_library_after_forked_runs(scheduler_env, write_config, tmp_path):
    code_dir = module(tmp_path / "code", "light", "def job(ctx):\n    return {'rows_written': 2}\n")
    path = write_config(f"""
        jobs:
          py: {{kind: python, schedule: "0 0 1 1 *", function: "light:job", cwd: {code_dir}}}
    """)
    program = textwrap.dedent(f"""
        import os, sys
        from datetime import UTC, datetime
        from pathlib import Path
        from scheduler.config import load_compiled
        from scheduler.forkserver import ForkServer
        from scheduler.process import ChildTable
        from scheduler.runner import Runner, RunRequest
        from scheduler.state import StateStore
        cfg = load_compiled(Path({str(path)!r}))
        children = ChildTable()
        server = ForkServer(children, enabled=True)
        store = StateStore.open(Path({str(tmp_path / 's.db')!r}))
        runner = Runner(cfg, store, Path({str(tmp_path / 'data')!r}), children, "warning", server)
        slot = datetime(2026, 1, 1, tzinfo=UTC)
        results = [runner.execute(RunRequest(job="py", slot=slot, trigger="manual")) for _ in range(2)]
        server.close()
        heavy = [m for m in ("pandas", "pyarrow", "numpy", "pydantic", "docker", "requests") if m in sys.modules]
        print(" ".join(r.status for r in results), server.starts, ",".join(heavy))
    """)
    env = {**scheduler_env, "SCHEDULER_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, check=True,
                         timeout=120)
    assert out.stdout.split("\n")[-2].split(" ") == ["success", "success", "1", ""], out.stdout + out.stderr


def test_a_disabled_fork_server_falls_back_to_a_fresh_interpreter(write_config, tmp_path):
    out = tmp_path / "ppid"
    code = module(tmp_path / "code", "who", f"""
        import os
        def job(ctx):
            open({str(out)!r}, "w").write(str(os.getppid()))
    """)
    config = load_config(write_config(f"""
        jobs:
          py: {{kind: python, function: "who:job", cwd: {code}}}
    """))
    server = ForkServer(ChildTable(), enabled=False)
    store = StateStore.open(tmp_path / "state.db")
    try:
        result = Runner(config, store, tmp_path / "data", server.children, "warning", server).execute(
            RunRequest(job="py", slot=SLOT, trigger="manual"))
    finally:
        store.close()
    assert result.status == "success", result.error
    assert int(out.read_text()) == os.getpid() and server.pid is None and server.starts == 0


def test_the_daemon_replaces_a_killed_server_and_records_the_lost_run(scheduler_cmd, scheduler_env, write_config,
                                                                      tmp_path):
    block, started, facts = tmp_path / "block", tmp_path / "started", tmp_path / "facts.json"
    block.write_text("x")
    code = module(tmp_path / "code", "tick", f"""
        import json, os, pathlib, time
        def job(ctx):
            if pathlib.Path({str(block)!r}).exists():
                pathlib.Path({str(started)!r}).write_text("x")
                time.sleep(300)
            pathlib.Path({str(facts)!r}).write_text(json.dumps(
                {{"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0)}}))
    """)
    config = write_config(f"""
        jobs:
          tick: {{kind: python, every: 1s, function: "tick:job", cwd: {code}, timeout: 2m}}
    """)
    data, log_path = tmp_path / "data", tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen([*scheduler_cmd, "run", "--config", str(config), "--data-dir", str(data),
                                   "--log-format", "json"], stdout=log, stderr=subprocess.STDOUT, env=scheduler_env)
    try:
        def events(name: str) -> list[dict]:
            out = []
            for line in log_path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == name:
                    out.append(event)
            return out

        wait_for(started.exists, timeout=60, what="the blocking run to start")
        first = events("fork server started")[0]["pid"]
        os.kill(first, signal.SIGKILL)
        failed = wait_for(lambda: [e for e in events("run finished") if e.get("status") == "failed"], timeout=30,
                          what="the lost run to be recorded")
        assert "the fork server died (killed by SIGKILL)" in failed[0]["error"]
        block.unlink()
        wait_for(facts.exists, timeout=30, what="a run after the server died")
        servers = [e["pid"] for e in events("fork server started")]
        assert len(servers) == 2 and servers[1] != first
        seen = json.loads(facts.read_text())
        assert seen["ppid"] == servers[1] and seen["pgid"] == seen["pid"] != daemon.pid
        # the run wrote its facts before it returned: it is recorded once its process has ended
        wait_for(lambda: [e for e in events("run finished") if e.get("status") == "success"], timeout=30,
                 what="the run after the server died to be recorded")
        store = StateStore.open(data / ".scheduler" / "state.db")
        try:
            statuses = {r.status for r in store.history("tick", 100)}
        finally:
            store.close()
        assert {"failed", "success"} <= statuses
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    wait_for(lambda: not os.path.exists(f"/proc/{servers[1]}"), what="the server to stop with the daemon")


def test_an_opt_in_heavy_preload_starts_no_thread_and_serves_pandas_runs(forked, tmp_path, monkeypatch):
    monkeypatch.setenv("SCHEDULER_FORKSERVER_PRELOAD", "pandas,pyarrow,pyarrow.parquet")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "JE_ARROW_MALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    target = tmp_path / "out.parquet"
    code = module(tmp_path / "code", "frame", f"""
        import os, sys
        def job(ctx):
            preloaded = "pandas" in sys.modules and "pyarrow.parquet" in sys.modules
            import pandas as pd
            pd.DataFrame({{"a": [1, 2, 3]}}).to_parquet({str(target)!r})
            return {{"rows_written": int(pd.read_parquet({str(target)!r})["a"].sum()),
                    "preloaded": preloaded}}
    """)
    runner, server = forked(f"""
        jobs:
          frame: {{kind: python, function: "frame:job", cwd: {code}}}
    """)
    result = run(runner, "frame")
    assert result.status == "success", result.error
    assert result.metrics["rows_written"] == 6 and result.metrics["preloaded"] is True
    assert len(os.listdir(f"/proc/{server.pid}/task")) == 1  # pandas and pyarrow loaded, no pool started


def test_a_preload_that_starts_a_thread_means_fresh_interpreters(forked, tmp_path, monkeypatch):
    module(tmp_path / "preload", "starts_a_thread", """
        import threading
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    """)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path / "preload"),
                                                                    os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SCHEDULER_FORKSERVER_PRELOAD", "starts_a_thread")
    out = tmp_path / "ppid"
    code = module(tmp_path / "code", "who", f"""
        import os
        def job(ctx):
            open({str(out)!r}, "w").write(str(os.getppid()))
    """)
    runner, server = forked(f"""
        jobs:
          py: {{kind: python, function: "who:job", cwd: {code}}}
    """)
    result = run(runner, "py")
    assert result.status == "success", result.error
    assert int(out.read_text()) == os.getpid()  # a fresh interpreter, started by us
    assert server.pid is None and server.starts == 0


def test_a_forked_run_ends_like_an_interpreter_open_files_and_thread_pools_included(forked, tmp_path):
    """As with a fresh interpreter: a file object the job never closed is flushed and the work it
    queued on a thread pool is done before the run is over (and the pool does not hang the child)."""
    kept, queued = tmp_path / "kept.txt", tmp_path / "queued.txt"
    code = module(tmp_path / "code", "leftover", f"""
        import threading
        from concurrent.futures import ThreadPoolExecutor
        out = open({str(kept)!r}, "w")  # never closed
        pool = ThreadPoolExecutor(max_workers=1)
        gate = threading.Event()
        threading._register_atexit(gate.set)  # opens once the child begins to exit
        def job(ctx):
            out.write("kept")
            pool.submit(gate.wait)
            pool.submit(lambda: open({str(queued)!r}, "w").write("queued"))
            return {{"rows_written": 1}}
    """)
    runner, _ = forked(f"""
        jobs:
          leftover: {{kind: python, function: "leftover:job", cwd: {code}, timeout: 60s}}
    """)
    result = run(runner, "leftover")
    assert result.status == "success", result.error
    assert kept.read_text() == "kept" and queued.read_text() == "queued"
