"""The bundled sample: a sales API serving deterministic dirty data (``api``) and the quick
start that runs ``daily_sales`` against it (``demo``, the ``scheduler demo`` command).

Not part of the scheduler's core: nothing in ``scheduler`` outside this package imports it,
except the command line naming the ``demo`` command.  Tests and benchmarks use the API too.
"""
