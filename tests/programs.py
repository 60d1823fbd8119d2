"""Where tests find the programs they start: beside ``sys.executable``, never on PATH.

README's ``.venv/bin/python -m pytest`` runs without an activated venv, so PATH may hold another
``python`` (without the project's dependencies) and no ``scheduler`` or ``run-job`` at all.  The
interpreter running the tests and its console scripts live in one directory: take them from there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Not resolved: a venv's ``python`` is a symlink to the base interpreter, whose directory holds
# none of the venv's console scripts.
BIN_DIR = Path(sys.executable).parent


def venv_program(name: str) -> str:
    """Absolute path of the console script ``name`` installed beside ``sys.executable``.

    Raises FileNotFoundError naming the interpreter when it is missing (the package is not
    installed into this interpreter's environment).
    """
    path = BIN_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed beside {sys.executable} (pip install -e '.[dev]')")
    return str(path)
