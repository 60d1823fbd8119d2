"""Command line: ``scheduler run | run-job | list | validate | history | schema | backfill | status``.

Every subcommand accepts ``--config`` and ``--data-dir`` before or after its own arguments.
Errors the user can fix (bad config, unknown job, bad date) print one line per problem and exit
with the error's code (2); no tracebacks for them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scheduler import __version__, clock
from scheduler.config.compiled import Config, load_compiled
from scheduler.errors import (
    ConfigError,
    Interrupted,
    JobFailed,
    SchedulerError,
    StateError,
    UsageError,
)
from scheduler.logs import configure

DEFAULT_CONFIG = "config"
DEFAULT_DATA_DIR = "data"
EXIT_FOR_STATUS = {"success": 0, "failed": 1, "timeout": 1, "skipped": 0, "abandoned": 1}


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--config", default=default, metavar="PATH",
                        help="config file or directory of *.yaml (env SCHEDULER_CONFIG, default config/)")
    parser.add_argument("--data-dir", default=default, metavar="DIR",
                        help="data root (env SCHEDULER_DATA_DIR, default data/)")
    parser.add_argument("--log-level", default=default, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=default, choices=["auto", "json", "console"])


def build_parser(prog: str = "scheduler") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Cron-container scheduler for recurring data jobs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    add("run", "run the scheduler in the foreground (PID 1 of its container)")
    p = add("run-job", "run one job now in the foreground; exit code is the run's outcome")
    _run_job_args(p)
    p = add("list", "list jobs with their schedules and next three fire times")
    p.add_argument("--json", action="store_true")
    add("validate", "check the config and exit (0 valid, 2 invalid)")
    p = add("history", "show recorded runs, newest first")
    p.add_argument("job", nargs="?")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    add("schema", "print the JSON Schema of the config file")
    p = add("demo", "quick start: run daily_sales against the bundled sample sales API")
    p.add_argument("--date", help="logical date YYYY-MM-DD (default: yesterday)")
    p.add_argument("--records", type=int, default=5_000, help="records the sample API serves for the date")
    p.add_argument("--job", default="daily_sales")
    p = add("health", "exit 0 if the scheduler using this data dir is alive (for HEALTHCHECK)")
    p.add_argument("--max-age", type=float, default=None, help="seconds since the last loop tick (default 65)")
    from scheduler.ops import cli as ops_cli

    ops_cli.add_subcommands(add)
    return parser


def _run_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="job name")
    p.add_argument("--date", help="logical date YYYY-MM-DD (backfill); default: the most recent slot")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="run parameter (repeatable); values are parsed as YAML scalars")


def _setting(args: argparse.Namespace, name: str, env: str, default: str) -> str:
    value = getattr(args, name, None)
    return value if value else os.environ.get(env, default)


def config_path(args: argparse.Namespace) -> Path:
    return Path(_setting(args, "config", "SCHEDULER_CONFIG", DEFAULT_CONFIG))


def data_dir(args: argparse.Namespace) -> Path:
    return Path(_setting(args, "data_dir", "SCHEDULER_DATA_DIR", DEFAULT_DATA_DIR)).resolve()


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--date: expected YYYY-MM-DD, got {text!r}") from None


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    if not items:
        return {}  # without parameters, spare the YAML import (run-job start-up time)
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key] = value
    return params


def open_store(config: Config, root: Path) -> Any:
    return open_store_at(Path(config.state.path) if config.state.path else root / ".scheduler" / "state.db")


def open_store_at(path: Path) -> Any:
    from scheduler.state import StateStore

    try:
        return StateStore.open(path)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the state store {path}: {exc}") from None


def _load(args: argparse.Namespace) -> tuple[Config, Any]:
    """The config for long-running commands (``run``, ``run-job``): validated in a child process,
    so this process never imports pydantic."""
    config = load_compiled(config_path(args))
    level = getattr(args, "log_level", None) or config.daemon.log_level
    fmt = getattr(args, "log_format", None) or config.daemon.log_format
    redactor = configure(level, fmt, config.secrets)
    return config, redactor


# --- subcommands -------------------------------------------------------------------------------
def load_config(path: Path) -> Config:
    """Validate in this process (short-lived commands)."""
    from scheduler.config.loader import load_config as load

    return load(path)


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(config_path(args))
    print(f"config OK: {len(config.jobs)} job(s) from {', '.join(config.sources)}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from scheduler.config.loader import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from scheduler.planner import next_fire_times

    config = load_config(config_path(args))
    now = clock.now()
    rows = []
    for name, spec in config.jobs.items():
        schedule = config.schedules[name]
        upcoming = next_fire_times(config, name, now, 3) if spec.enabled else []
        rows.append({
            "job": name, "kind": spec.kind, "schedule": schedule.describe(), "timezone": spec.timezone,
            "after": list(spec.after), "enabled": spec.enabled,
            "next": [t.astimezone(schedule.tz).isoformat() for t in upcoming],
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from scheduler.ops.tables import print_table

    print_table(["JOB", "KIND", "SCHEDULE", "TIMEZONE", "NEXT FIRE TIMES"],
                [[r["job"] + ("" if r["enabled"] else " (disabled)"), r["kind"],
                  " ".join(filter(None, [r["schedule"] if r["schedule"] != "-" else "",
                                         f"after {', '.join(r['after'])}" if r["after"] else ""])) or "-",
                  r["timezone"],
                  "\n".join(r["next"]) or "-"] for r in rows])
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    config = load_config(config_path(args))
    if args.job and args.job not in config.jobs:
        raise UsageError(f"unknown job '{args.job}'")
    store = open_store(config, data_dir(args))
    try:
        records = store.history(args.job, args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    from scheduler.ops.tables import print_table

    print_table(["ID", "JOB", "LOGICAL DATE", "TRIGGER", "ATTEMPT", "STATUS", "STARTED", "DURATION", "ROWS", "ERROR"],
                [[str(r.id), r.job, r.logical_date.isoformat(), r.trigger, str(r.attempt), r.status,
                  r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-",
                  f"{r.duration:.1f}s" if r.duration is not None else "-",
                  str(r.rows) if r.rows is not None else "-", (r.error or "")[:80]] for r in records])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.daemon import Daemon

    config, redactor = _load(args)
    root = data_dir(args)
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(config, root)
    try:
        daemon = Daemon(config, config_path(args), root, store, redactor,
                        getattr(args, "log_level", None) or config.daemon.log_level)
        from scheduler.ops import attach

        attach(daemon)
        return daemon.serve()
    finally:
        store.close()


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when a daemon's loop ticked recently and the state store answers (for HEALTHCHECK)."""
    import time

    from scheduler.daemon import IDLE_TICK, heartbeat_path

    root = data_dir(args)
    limit = args.max_age if args.max_age is not None else IDLE_TICK.total_seconds() * 2 + 5
    try:
        age = time.time() - heartbeat_path(root).stat().st_mtime
    except FileNotFoundError:
        print("unhealthy: no heartbeat (is the scheduler running with this --data-dir?)")
        return 1
    if age > limit:
        print(f"unhealthy: scheduler loop last ticked {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    try:
        state_path = load_config(config_path(args)).state.path
    except ConfigError:
        state_path = None  # a bad new config file must not make a running daemon unhealthy
    store = open_store_at(Path(state_path) if state_path else root / ".scheduler" / "state.db")
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - any store failure makes the check fail
        print(f"unhealthy: state store does not answer: {exc}")
        return 1
    finally:
        store.close()
    print(f"healthy: loop ticked {age:.0f}s ago")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scheduler.demo import cmd_demo

    return cmd_demo(args)


def slot_for(config: Config, job: str, day: date | None) -> datetime:
    """The slot a foreground run of ``job`` stands for: ``day``'s, or the most recent one."""
    schedule = config.schedules[job]
    return schedule.slot_for_date(day) if day is not None else schedule.latest_slot(clock.now())


def cmd_run_job(args: argparse.Namespace) -> int:
    from scheduler.process import ChildTable
    from scheduler.runner import RunHandle, Runner, RunRequest

    config, _ = _load(args)
    if args.job not in config.jobs:
        raise UsageError(f"unknown job '{args.job}' (known: {', '.join(config.jobs) or 'none'})")
    day = parse_date(args.date) if args.date else None
    request = RunRequest(job=args.job, slot=slot_for(config, args.job, day), trigger="manual",
                         params=parse_params(args.param))
    root = data_dir(args)
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(config, root)
    handle = RunHandle(request)
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            handle.cancel(f"interrupted by {signal.Signals(signum).name}")
        else:
            handle.kill()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner = Runner(config, store, root, ChildTable(),
                        getattr(args, "log_level", None) or config.daemon.log_level)
        thread = threading.Thread(target=runner.execute, args=(request, handle), daemon=True)
        thread.start()
        while not handle.finished.wait(0.5) and thread.is_alive():
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        store.close()
    result = handle.result
    if result is None or result.status == "skipped":
        raise JobFailed(result.error if result is not None else "the run ended without a result")
    if result.status == "interrupted":
        raise Interrupted(received[0] if received else signal.SIGTERM)
    return EXIT_FOR_STATUS.get(result.status, 1)


COMMANDS = {
    "run": cmd_run, "run-job": cmd_run_job, "list": cmd_list, "validate": cmd_validate,
    "history": cmd_history, "schema": cmd_schema, "health": cmd_health, "demo": _demo,
}


def main(argv: Sequence[str] | None = None, prog: str = "scheduler") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from scheduler.ops import cli as ops_cli

    handler = COMMANDS.get(args.command) or ops_cli.COMMANDS[args.command]
    try:
        return handler(args)
    except SchedulerError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(line if isinstance(exc, ConfigError) else f"error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run_job_main(argv: Sequence[str] | None = None) -> int:
    """The ``run-job`` console script: ``run-job NAME [--date D] [--param k=v]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["run-job", *argv], prog="scheduler")

