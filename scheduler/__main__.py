"""``python -m scheduler`` is the ``scheduler`` console script."""

from scheduler.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
