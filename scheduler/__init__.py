"""Cron-container scheduler for recurring data jobs.

The package is split by noun: ``config`` (what), ``schedule`` (when), ``runs`` and ``runner``
(how one run executes), ``kinds`` (what a run does), ``state`` (records), ``daemon`` (the PID-1
loop), ``ops`` (operations), ``app`` (the context every command builds) and ``cli`` (argument
parsing); ``sample`` is the bundled sample API and demo.  docs/architecture.md has the picture
and the rules.  Importing the package has no side effects.
"""

__version__ = "0.1.0"
