"""A job kind that is not built in: its registry line (this file) and its module (``toy.py``).

``SCHEDULER_KINDS=toykind:KIND`` (or ``BUILTIN.with_plugins("toykind:KIND")``) adds it.  This file
stays as light as the registry itself: the daemon imports it, never ``toy.py``.
"""

from scheduler.kinds.registry import Kind

KIND = Kind("toy", spec="toykind.toy:ToyJob", executor="toykind.toy:execute", forbidden="toykind.toy:FORBIDDEN")
