"""The application context: what every command needs, resolved once, in one place.

From the options every subcommand accepts (:class:`Options`) it resolves the config path
(``--config``, ``SCHEDULER_CONFIG``, default ``config/``) and the data dir (``--data-dir``,
``SCHEDULER_DATA_DIR``, default ``data/``), loads the config, configures logging, opens the state
store and builds runners and daemons (:class:`App`).  The command line only parses arguments;
commands, ``backfill``, ``status`` and ``demo`` build their :class:`App` here and never import
the command line.

Invariants: the state store is opened only by :func:`open_state`; an :class:`App` opens it at
most once, on first use of :attr:`App.store`, and :meth:`App.close` closes it.  Commands that run
jobs hold the compiled config (validated in a child process, so their process never imports
pydantic); commands that only read validate in-process.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

from scheduler.config.compiled import Config, load_compiled
from scheduler.logs import Redactor, configure
from scheduler.stores.protocol import StateStore

if TYPE_CHECKING:
    from scheduler.daemon import Daemon
    from scheduler.process import ChildTable
    from scheduler.runner import Runner
    from scheduler.stores.records import JobControl

DEFAULT_CONFIG = "config"
DEFAULT_DATA_DIR = "data"


def _setting(value: str | None, env: str, default: str) -> str:
    return value if value else os.environ.get(env, default)


@dataclass(frozen=True)
class Options:
    """The options every subcommand accepts; None where not given on the command line."""

    config: str | None = None
    data_dir: str | None = None
    log_level: str | None = None
    log_format: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        return cls(**{name: getattr(args, name, None) for name in ("config", "data_dir", "log_level", "log_format")})

    @property
    def config_path(self) -> Path:
        """``--config``, else ``SCHEDULER_CONFIG``, else ``config/`` (a file or a directory of ``*.yaml``)."""
        return Path(_setting(self.config, "SCHEDULER_CONFIG", DEFAULT_CONFIG))

    @property
    def data_root(self) -> Path:
        """``--data-dir``, else ``SCHEDULER_DATA_DIR``, else ``data/``; absolute."""
        return Path(_setting(self.data_dir, "SCHEDULER_DATA_DIR", DEFAULT_DATA_DIR)).resolve()


def load_config(path: Path) -> Config:
    """The validated config for short-lived commands: a cached compile result while none of its
    inputs changed (no pydantic, no child: :mod:`scheduler.config.cache`), else validated in the
    compile child, which fills the cache; without a usable cache, validated in this process."""
    from scheduler.config.cache import CompileCache

    cache = CompileCache.default()
    if cache is not None:
        return load_compiled(path, cache)
    from scheduler.config.loader import load_config as load

    return load(path)


def state_path(config: Config | None, data_dir: Path) -> Path:
    """Where the state store lives: ``state.path`` from the config, else under the data dir."""
    from scheduler.stores import sqlite_path

    return sqlite_path(config.state if config is not None else None, data_dir)


def open_state(config: Config | None, data_dir: Path) -> StateStore:
    """Open the state store for ``config`` (None: the data dir's default store).

    The one place a store is opened.  Raises ``StateError`` (exit 2) when it cannot be.
    """
    from scheduler.stores import open_store

    return open_store(config.state if config is not None else None, data_dir)


def paused_jobs(config: Config, data_dir: Path) -> dict[str, JobControl]:
    """The paused jobs for reading commands (``list``); never creates a SQLite file to say none are."""
    if config.state.backend == "sqlite" and not state_path(config, data_dir).exists():
        return {}
    store = open_state(config, data_dir)
    try:
        return {job: c for job, c in store.job_controls().items() if c.paused}
    finally:
        store.close()


@dataclass
class App:
    """One command's context: paths, config, log settings, and the state store once opened.

    Build with :meth:`load` (commands that run jobs) or :meth:`inspect` (commands that read);
    use as a context manager, or call :meth:`close`.
    """

    options: Options
    config_path: Path
    data_dir: Path
    config: Config
    log_level: str
    log_format: str
    redactor: Redactor | None = None
    _store: StateStore | None = field(default=None, repr=False)

    @classmethod
    def _build(cls, options: Options, config: Config) -> Self:
        return cls(options, options.config_path, options.data_root, config,
                   options.log_level or config.daemon.log_level, options.log_format or config.daemon.log_format)

    @classmethod
    def load(cls, options: Options, *, cached: bool = True) -> Self:
        """For commands that run jobs (``run``, ``run-job``, ``backfill``, ``demo``): the compiled
        config, validated in a child process, and logging configured with its secrets masked.

        ``cached=False`` (the daemon): always validate in the child, never read the config cache;
        the long-running process then never imports the cache's cipher (a start-up costs one
        child process, not resident memory for as long as the daemon lives)."""
        app = cls._build(options, load_compiled(options.config_path, "default" if cached else None))
        app.configure_logging()
        return app

    @classmethod
    def inspect(cls, options: Options) -> Self:
        """For commands that only read (``validate``, ``list``, ``history``, ``status``): the
        config validated in this process; logging left as it is."""
        return cls._build(options, load_config(options.config_path))

    def configure_logging(self) -> Redactor:
        """(Re)configure the process's logging from the options and config; keeps the redactor.

        structlog itself is imported on the first event at the configured level (a ``run-job``
        at ``warning`` that logs nothing never imports it): this process's code logs through
        :func:`~scheduler.logs.get_logger` only; kinds that use structlog directly run in workers."""
        self.redactor = configure(self.log_level, self.log_format, self.config.secrets, defer=True)
        return self.redactor

    def prepare_data_dir(self) -> None:
        """Create the data dir (commands that write to it); a dir this process may not create is
        a setup error (``StoreNotWritable``, exit 2, with the fix)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            from scheduler.stores.sqlite_schema import not_writable, unwritable

            blocked = unwritable(self.data_dir / ".scheduler" / "state.db")
            if blocked is None:
                raise
            raise not_writable(self.data_dir, blocked, "the data dir") from None

    @property
    def store(self) -> StateStore:
        """The state store, opened on first use (``StateError`` when it cannot be)."""
        if self._store is None:
            self._store = open_state(self.config, self.data_dir)
        return self._store

    def runner(self, children: ChildTable | None = None) -> Runner:
        """A runner of this config's jobs, recording in :attr:`store`."""
        from scheduler.process import ChildTable  # imported on use: reading commands stay light
        from scheduler.runner import Runner

        return Runner(self.config, self.store, self.data_dir, children if children is not None else ChildTable(),
                      self.log_level)

    def daemon(self) -> Daemon:
        """The scheduler loop over this config and store (not yet serving, no extensions)."""
        from scheduler.daemon import Daemon

        return Daemon(self.config, self.config_path, self.data_dir, self.store, self.redactor, self.log_level)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
