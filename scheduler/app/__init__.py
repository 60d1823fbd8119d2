"""The application layer between the command line and the core.

``context`` resolves paths, loads the config, configures logging, opens the state store and
builds runners and daemons (:class:`~scheduler.app.context.App`); ``commands`` holds the core
subcommands.  The command line (``scheduler.cli``) only parses arguments and dispatches here, to
``scheduler.ops`` (``backfill``, ``status``) and to ``scheduler.sample.demo``; nothing imports
the command line back.  Importing this package has no side effects.
"""
