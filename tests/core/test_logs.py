"""Logging set-up: a deferred configuration imports structlog only when an event needs it, and
then renders exactly as an eager one; asyncio waits until one of structlog's async methods uses it.

Each case runs in a fresh interpreter: what is imported is the point, and this process has
imported structlog long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PRELUDE = """
import io, sys
from scheduler.logs import configure, get_logger
out = io.StringIO()
def imported(name):
    return name in sys.modules
"""


def run_code(code: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_deferred_configuration_drops_quiet_events_without_importing_structlog():
    [report] = run_code("""
        configure("warning", "json", ["hunter2-secret"], stream=out, defer=True)
        log = get_logger(job="j").bind(run_id=7)
        log.info("dropped"); log.debug("dropped too", x=1)
        before = imported("structlog")
        log.warning("shown", token="hunter2-secret")
        log.info("dropped after the import")
        get_logger().error("second logger")
        import json
        print(json.dumps({"before": before, "after": imported("structlog"),
                          "lines": [json.loads(l) for l in out.getvalue().splitlines()]}))
    """)
    assert report["before"] is False and report["after"] is True
    shown, second = report["lines"]
    assert (shown["event"], shown["level"], shown["job"], shown["run_id"]) == ("shown", "warning", "j", 7)
    assert shown["token"] == "***" and "timestamp" in shown
    assert (second["event"], second["level"]) == ("second logger", "error") and "job" not in second


def test_without_defer_structlog_is_configured_at_once():
    """The worker's case: kinds that log through structlog directly find it configured."""
    [report] = run_code("""
        configure("info", "json", stream=out)
        import structlog
        structlog.get_logger().info("direct", n=1)
        import json
        print(json.dumps(json.loads(out.getvalue())))
    """)
    assert (report["event"], report["level"], report["n"]) == ("direct", "info", 1)


def test_asyncio_loads_when_an_async_method_uses_it():
    [report] = run_code("""
        configure("info", "json", stream=out)
        quiet_until_used = not imported("asyncio")
        import asyncio
        async def main():
            await get_logger(job="a").ainfo("from a coroutine")
        asyncio.run(main())
        import json
        print(json.dumps({"quiet": quiet_until_used, "line": json.loads(out.getvalue())}))
    """)
    assert report["quiet"] is True
    assert (report["line"]["event"], report["line"]["job"]) == ("from a coroutine", "a")


def test_threads_logging_first_at_once_all_reach_the_configured_output():
    """``backfill --parallel`` and a run's pump threads: the first events come from several threads
    together; each must find structlog imported whole and configured, none may be lost."""
    [report] = run_code("""
        import threading
        configure("info", "json", stream=out, defer=True)
        start = threading.Barrier(8)
        def log(i):
            logger = get_logger(worker=i)
            start.wait()
            logger.info("first", i=i)
        threads = [threading.Thread(target=log, args=(i,)) for i in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        import json
        print(json.dumps([json.loads(l) for l in out.getvalue().splitlines()]))
    """)
    assert sorted(e["worker"] for e in report) == list(range(8))
    assert all(e["event"] == "first" and e["level"] == "info" and "timestamp" in e for e in report)


def test_rich_is_hidden_from_structlog_only_in_the_importing_thread():
    [report] = run_code("""
        import sys, threading
        from scheduler.logs import _Hidden
        hidden = _Hidden("rich")
        sys.meta_path.insert(0, hidden)
        seen = {}
        def other():
            import rich.text
            seen["other"] = "rich.text" in sys.modules
        t = threading.Thread(target=other); t.start(); t.join()
        del sys.modules["rich.text"], sys.modules["rich"]
        try:
            import rich
            seen["own"] = True
        except ModuleNotFoundError:
            seen["own"] = False
        sys.meta_path.remove(hidden)
        import rich
        seen["after"] = True
        import json
        print(json.dumps(seen))
    """)
    assert report == {"other": True, "own": False, "after": True}
