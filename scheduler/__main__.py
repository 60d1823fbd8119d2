"""``python -m scheduler`` is the ``scheduler`` console script."""

from scheduler.cli import script

if __name__ == "__main__":
    script()
