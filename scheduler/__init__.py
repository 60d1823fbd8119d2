"""Cron-container scheduler for recurring data jobs.

The package is split by noun: ``config`` (what), ``schedule`` (when), ``runner`` (how one run
executes), ``kinds`` (what a run does), ``state`` (records), ``daemon`` (the PID-1 loop) and
``cli`` (the commands).  Importing the package has no side effects.
"""

__version__ = "0.1.0"
